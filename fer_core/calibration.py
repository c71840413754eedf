"""Calibration: can the model's probabilities be believed? Metrics, reliability diagrams and temperature scaling.

A classifier is calibrated when, of the faces it gives 80% confidence, 80% are right. The metrics here take a model's
logits (or probabilities) and the true labels::

    metrics = calibration_metrics(logits, labels)                 # ece, ece_adaptive, nll, brier, reliability
    t = fit_temperature(val_logits, val_labels)                    # one scalar T > 0, fitted on the validation split
    after = calibration_metrics(test_logits, test_labels, temperature=t)

- ``ece``: expected calibration error with 15 equal-width confidence bins (Naeini et al. 2015, Guo et al. 2017), by
  torchmetrics' ``multiclass_calibration_error(n_bins=15, norm="l1")``: the bin-size-weighted mean of
  ``|accuracy - mean confidence|`` of the top-1 prediction.
- ``ece_adaptive``: the same with 15 equal-mass bins (each holds the same number of faces, give or take one;
  Nguyen & O'Connor 2015, Nixon et al. 2019). No well-kept library computes it (torchmetrics and scikit-learn bin by
  width only), so it is written here, in a few lines.
- ``nll``: negative log-likelihood of the true class, mean over faces (torch's ``cross_entropy`` on the logits, so a
  confidently wrong face costs its full log-probability instead of a clipped one).
- ``brier``: the multiclass Brier score, scikit-learn's ``brier_score_loss(..., scale_by_half=False)``: the mean over
  faces of ``sum_c (p_c - y_c)^2``, Brier's (1950) original form, in [0, 2] (0 is perfect; a uniform guess over
  seven classes scores 6/7). Halve it for the binary convention in [0, 1].
- ``reliability``: the data of a reliability diagram with the ECE's bins: per bin its edges, the number of faces,
  their mean confidence and their accuracy (None for an empty bin).

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017) divides every logit by one
scalar ``T`` fitted on held-out data by minimising the NLL; it changes no prediction (the argmax is the same), only
how sure the model says it is. ``T > 1`` softens an over-confident model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

N_BINS = 15
"""Bins of the ECEs and the reliability diagram (the usual choice since Guo et al. 2017)."""
TEMPERATURE_BOUNDS = (0.05, 20.0)
"""The range ``fit_temperature`` searches; a fit at a bound means the validation data pushed it there (e.g. a model
that is right on every validation face wants T -> 0)."""


def _as_tensors(values: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N x C float64 tensor, N long tensor)`` of logits or probabilities and labels, checked to fit."""
    values = (values if isinstance(values, torch.Tensor) else torch.as_tensor(np.array(values))).detach().cpu()
    labels = (labels if isinstance(labels, torch.Tensor) else torch.as_tensor(np.array(labels))).detach().cpu()
    if values.ndim != 2:
        raise ValueError(f"expected an N x C array of logits or probabilities, got shape {tuple(values.shape)}")
    if labels.ndim != 1 or len(labels) != len(values):
        raise ValueError(f"expected {len(values)} labels (one per row), got shape {tuple(labels.shape)}")
    labels = labels.long()
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= values.shape[1]):
        raise ValueError(f"labels must be class indices 0..{values.shape[1] - 1}; got {int(labels.min())}.."
                         f"{int(labels.max())}")
    return values.double(), labels


def _check_probs(probs: torch.Tensor) -> torch.Tensor:
    sums = probs.sum(1)
    if len(probs) and (bool((probs < 0).any()) or not torch.allclose(sums, torch.ones_like(sums), atol=1e-3)):
        raise ValueError("expected probabilities (non-negative, each row summing to 1); pass logits through "
                         "softmax first, or use calibration_metrics(logits, ...)")
    return probs / sums[:, None] if len(probs) else probs


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = N_BINS) -> float:
    """ECE with ``n_bins`` equal-width bins of top-1 confidence (torchmetrics ``multiclass_calibration_error``,
    norm l1). NaN when there are no faces."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    probs, labels = _as_tensors(probs, labels)
    if not len(labels):
        return math.nan
    probs = _check_probs(probs)
    return float(multiclass_calibration_error(probs.float(), labels, num_classes=probs.shape[1], n_bins=n_bins,
                                              norm="l1"))


def adaptive_calibration_error(probs: Any, labels: Any, n_bins: int = N_BINS) -> float:
    """ECE with ``n_bins`` equal-mass bins: the faces sorted by top-1 confidence and cut into ``n_bins`` runs of
    equal size (sizes differ by at most one; with fewer faces than bins, one face per bin). Hand-written: no
    well-kept library has it. NaN when there are no faces."""
    probs, labels = _as_tensors(probs, labels)
    if not len(labels):
        return math.nan
    confidence, pred = _check_probs(probs).max(1)
    correct = (pred == labels).double().numpy()
    confidence = confidence.numpy()
    order = np.argsort(confidence, kind="stable")
    total = 0.0
    for members in np.array_split(order, min(n_bins, len(order))):
        total += len(members) * abs(correct[members].mean() - confidence[members].mean())
    return float(total / len(order))


def negative_log_likelihood(logits: Any, labels: Any, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true classes under ``softmax(logits / temperature)`` (torch
    ``cross_entropy``). NaN when there are no faces."""
    logits, labels = _as_tensors(logits, labels)
    if not len(labels):
        return math.nan
    return float(F.cross_entropy(logits / temperature, labels))


def brier_score(probs: Any, labels: Any) -> float:
    """Multiclass Brier score, mean over faces of ``sum_c (p_c - y_c)^2`` in [0, 2] (scikit-learn
    ``brier_score_loss`` with ``scale_by_half=False``). NaN when there are no faces."""
    from sklearn.metrics import brier_score_loss

    probs, labels = _as_tensors(probs, labels)
    if not len(labels):
        return math.nan
    probs = _check_probs(probs)
    return float(brier_score_loss(labels.numpy(), probs.numpy(), labels=np.arange(probs.shape[1]),
                                  scale_by_half=False))


def reliability_bins(probs: Any, labels: Any, n_bins: int = N_BINS) -> dict[str, list]:
    """A reliability diagram's data with the ECE's equal-width bins.

    A face falls in bin ``i`` when ``edges[i] <= confidence < edges[i + 1]`` (torchmetrics' binning; a confidence of
    exactly 1 goes in the last bin). Returns ``{"edges": [n_bins + 1 floats], "count": [...], "confidence": [mean
    confidence or None], "accuracy": [accuracy or None]}``; None marks an empty bin. The ECE is
    ``sum(count * |accuracy - confidence|) / sum(count)`` over the bins that are not empty (up to faces at
    confidence exactly 1, which torchmetrics keeps in a bin of their own).
    """
    probs, labels = _as_tensors(probs, labels)
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float32)
    out: dict[str, list] = {"edges": [round(float(e), 6) for e in edges], "count": [0] * n_bins,
                            "confidence": [None] * n_bins, "accuracy": [None] * n_bins}
    if not len(labels):
        return out
    confidence, pred = _check_probs(probs).float().max(1)
    index = (torch.bucketize(confidence, edges, right=True) - 1).clamp(0, n_bins - 1)
    correct = (pred == labels).double()
    counts = torch.bincount(index, minlength=n_bins)
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, confidence.double())
    acc_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, correct)
    for i in range(n_bins):
        n = int(counts[i])
        out["count"][i] = n
        if n:
            out["confidence"][i] = float(conf_sum[i] / n)
            out["accuracy"][i] = float(acc_sum[i] / n)
    return out


def calibration_metrics(logits: Any, labels: Any, temperature: float = 1.0, n_bins: int = N_BINS
                        ) -> dict[str, Any]:
    """``{"ece", "ece_adaptive", "nll", "brier", "reliability"}`` of ``softmax(logits / temperature)``; the numbers
    are None when there are no faces (an empty subset)."""
    logits, labels = _as_tensors(logits, labels)
    check_temperature(temperature)
    probs = (logits / temperature).softmax(1)

    def number(value: float) -> float | None:
        return None if math.isnan(value) else value

    return {"ece": number(expected_calibration_error(probs, labels, n_bins)),
            "ece_adaptive": number(adaptive_calibration_error(probs, labels, n_bins)),
            "nll": number(negative_log_likelihood(logits, labels, temperature)),
            "brier": number(brier_score(probs, labels)),
            "reliability": reliability_bins(probs, labels, n_bins)}


def check_temperature(temperature: float) -> float:
    """``temperature`` as a float, or ValueError when it is not a finite number above 0."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"temperature must be a finite number above 0, got {temperature!r}")
    return value


def fit_temperature(logits: Any, labels: Any, bounds: Sequence[float] = TEMPERATURE_BOUNDS) -> float:
    """The temperature ``T`` in ``bounds`` that minimises the NLL of ``softmax(logits / T)`` on ``labels`` (Guo et
    al. 2017), found by scipy's bounded ``minimize_scalar`` over ``log T`` (the NLL is convex in ``1/T``, so the
    search has one minimum).

    Raises:
        ValueError: no faces to fit on, or logits that are not finite.
    """
    from scipy.optimize import minimize_scalar

    logits, labels = _as_tensors(logits, labels)
    if not len(labels):
        raise ValueError("cannot fit a temperature on no faces: the validation split is empty")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("cannot fit a temperature: some logits are NaN or infinite")
    low, high = (math.log(check_temperature(b)) for b in bounds)

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_t), labels))

    best = minimize_scalar(nll, bounds=(low, high), method="bounded", options={"xatol": 1e-6})
    log_t = float(best.x)
    if nll(0.0) < nll(log_t):  # never worse than leaving the logits alone
        log_t = 0.0
    return math.exp(log_t)
