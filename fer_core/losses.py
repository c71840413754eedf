"""Loss functions of the FER methods: soft targets, SCN's rank regularisation, RAN's region-biased loss.

Each is a plain function of tensors, so the methods in :mod:`fer_core.methods` compose them and tests check them
against the papers' formulas directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean_i -sum_c q_ic log p_ic`` for target rows ``q`` (summing to 1) and ``p = softmax(logits)``."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def kl_to_targets(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean_i KL(q_i || p_i)``: the soft-target cross-entropy minus the targets' entropy (same gradients)."""
    return F.kl_div(F.log_softmax(logits, dim=-1), targets, reduction="batchmean")


def rank_regularization(weights: torch.Tensor, beta: float, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SCN's rank regularisation over a batch of importance weights.

    The weights are sorted; the top ``beta`` fraction (at least one, at most all but one) is the high-importance
    group. Loss ``max(0, margin - (mean(high) - mean(low)))``.

    Returns:
        The loss and a boolean mask of the low-importance group (in the batch's order).
    """
    w = weights.reshape(-1)
    n = w.numel()
    k = min(max(int(beta * n), 1), n - 1)
    order = torch.argsort(w, descending=True)
    low = torch.zeros(n, dtype=torch.bool, device=w.device)
    low[order[k:]] = True
    loss = F.relu(margin - (w[order[:k]].mean() - w[order[k:]].mean()))
    return loss, low


def region_biased_loss(weights: torch.Tensor, margin: float) -> torch.Tensor:
    """RAN's region-biased loss: ``mean max(0, margin - (max_i a_i - a_0))`` over the batch, where ``a_0`` is the
    whole face's attention weight and ``a_1..`` the regions' (pushes at least one region above the whole face)."""
    return F.relu(margin - (weights[:, 1:].max(dim=1).values - weights[:, 0])).mean()


def balanced_class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``n / (k * count_c)`` per class (scikit-learn's "balanced"); a class absent from ``labels`` gets weight 0."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    weights = labels.numel() / (num_classes * counts.clamp_min(1))
    return torch.where(counts > 0, weights, torch.zeros_like(weights))


def inject_ambiguous_label_noise(labels: torch.Tensor, label_dists: torch.Tensor, rate: float) -> torch.Tensor:
    """Image-dependent noise: the ``round(rate * N)`` most ambiguous samples get their second most likely class.

    A sample's second choice is the class its label distribution rates highest after its label; its ambiguity is
    that class's probability over the label's (``p_second / p_label``). Ranked by ambiguity (ties by index), the
    top ``rate`` share flip to their second choice: like an annotator's errors, the wrong labels fall on faces that
    look like the other class, which a model (and SCN's importance weights) can see. Deterministic; ``labels`` is
    not modified.
    """
    if rate <= 0:
        return labels.clone()
    dists = torch.as_tensor(label_dists, dtype=torch.float64)
    if dists.ndim != 2 or len(dists) != len(labels) or dists.shape[1] < 2:
        raise ValueError(f"label distributions of shape {tuple(dists.shape)} do not match {len(labels)} labels")
    rows = torch.arange(len(labels))
    p_label = dists[rows, labels].clamp_min(1e-12)
    others = dists.clone()
    others[rows, labels] = -1.0
    p_second, second = others.max(dim=1)
    ambiguity = p_second / p_label
    k = int(round(rate * len(labels)))
    order = sorted(range(len(labels)), key=lambda i: (-float(ambiguity[i]), i))[:k]
    noisy = labels.clone()
    noisy[torch.as_tensor(order, dtype=torch.long)] = second[torch.as_tensor(order, dtype=torch.long)].to(labels.dtype)
    return noisy


def shuffle_labels(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """The labels in a random order fixed by ``seed``: the same multiset of labels (so the same class counts), no
    relation left between a sample and its label (the data randomisation of Adebayo et al., NeurIPS 2018).
    ``labels`` is not modified."""
    g = torch.Generator().manual_seed(seed)
    return labels[torch.randperm(len(labels), generator=g)].clone()


def inject_label_noise(labels: torch.Tensor, rate: float, num_classes: int, seed: int) -> torch.Tensor:
    """The SCN protocol: each label flips with probability ``rate`` to a uniformly random *different* class.

    Deterministic in ``seed``; ``labels`` is not modified.
    """
    if rate <= 0:
        return labels.clone()
    if num_classes < 2:
        raise ValueError("label noise needs at least two classes")
    g = torch.Generator().manual_seed(seed)
    flip = torch.rand(labels.shape, generator=g) < rate
    shift = torch.randint(1, num_classes, labels.shape, generator=g)
    return torch.where(flip, (labels + shift) % num_classes, labels)
