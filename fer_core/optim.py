"""Optimisers, sharpness-aware minimisation, per-epoch learning-rate schedules and gradient clipping.

The training step treats every optimiser alike except one announced by ``requires_closure`` (SAM), which is
stepped with a closure that redoes the forward and backward pass::

    optimizer.zero_grad(set_to_none=True)
    loss = forward_backward()           # forward, loss.backward(), clip_gradients(...) when clipping
    if getattr(optimizer, "requires_closure", False):
        optimizer.step(forward_backward)  # SAM: second forward/backward at the perturbed weights
    else:
        optimizer.step()
    ...
    scheduler.step(val_acc)             # once per epoch, after validation
"""

from __future__ import annotations

import bisect
import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from fer_core.config import OptimizerConfig, SchedulerConfig


# --------------------------------------------------------------------------------------------- optimisers
def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """SGD, Adam or AdamW over the model's trainable parameters, wrapped in :class:`SAM` when ``cfg.sam.enabled``.

    Two parameter groups, always in this order (either may be empty): group 0 holds the weights (tensors with
    more than one dimension) with ``cfg.weight_decay``; group 1 the biases and normalisation parameters (1-D)
    without decay. Frozen parameters (``requires_grad=False``) are left out, so rebuild the optimiser after
    freezing or unfreezing. ``momentum`` and ``nesterov`` apply to SGD only (Nesterov needs momentum > 0).
    Adam's weight decay is an L2 term added to the gradient (coupled, as ``torch.optim.Adam`` and the SCN
    reference do); AdamW's is decoupled from the gradient (Loshchilov and Hutter, 2019). On CUDA the update is
    PyTorch's fused kernel (``fused=True``).

    Raises:
        ValueError: if the model has no trainable parameter.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters (all requires_grad=False); "
                         "unfreeze some layers before building the optimiser")
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    # one fused CUDA kernel for the whole update instead of a few per parameter, where every parameter is a float
    # CUDA tensor; elsewhere PyTorch's default (foreach) implementation
    fused = {"fused": True} if all(p.is_cuda and p.is_floating_point() for p in params) else {}
    if cfg.name == "sgd":
        base: torch.optim.Optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                                                      nesterov=cfg.nesterov and cfg.momentum > 0, **fused)
    elif cfg.name == "adam":
        base = torch.optim.Adam(groups, lr=cfg.lr, **fused)
    elif cfg.name == "adamw":
        base = torch.optim.AdamW(groups, lr=cfg.lr, **fused)
    else:
        raise ValueError(f"unknown optimizer {cfg.name!r}; valid: sgd, adam, adamw")
    return SAM(base, rho=cfg.sam.rho, adaptive=cfg.sam.adaptive) if cfg.sam.enabled else base


class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimisation (Foret et al., ICLR 2021) around any base optimiser.

    With the gradient ``g`` of a first backward pass already in ``.grad``, :meth:`step` moves to the worst
    nearby point ``w + e_w``, ``e_w = rho * g / ||g||``, recomputes the gradient there with ``closure`` and lets
    the base optimiser update the original ``w`` with it. ``adaptive`` is ASAM (Kwon et al., ICML 2021) with
    ``T_w = |w|``: ``e_w = rho * w^2 g / ||w g||`` (element-wise; parameters at zero are not perturbed).

    ``param_groups`` and ``state`` are the base optimiser's own, so LR schedulers acting on SAM change the base's
    learning rates, and ``state_dict`` is the base's (a checkpoint loads into SAM or the bare base alike).
    Gradient clipping: clip inside the closure after ``backward`` (clipping the first pass too is harmless,
    ``e_w`` does not depend on the scale of ``g``). Not usable with ``GradScaler`` (fp16 loss scaling), which
    refuses closures: train SAM in fp32 or bf16. See :func:`frozen_bn_stats` for BatchNorm in the second pass.
    """

    requires_closure = True

    def __init__(self, base: torch.optim.Optimizer, rho: float = 0.05, adaptive: bool = False):
        if rho <= 0:
            raise ValueError(f"SAM rho must be > 0 (got {rho})")
        self.base, self.rho, self.adaptive = base, rho, adaptive
        super().__init__(base.param_groups, base.defaults)
        self._link()
        self._old: dict[torch.Tensor, torch.Tensor] = {}

    def _link(self) -> None:
        self.param_groups, self.state, self.defaults = self.base.param_groups, self.base.state, self.base.defaults

    @torch.no_grad()
    def first_step(self, zero_grad: bool = True) -> None:
        """Move every parameter with a gradient to ``w + e_w`` (remembering ``w``), then clear the gradients."""
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            raise RuntimeError("SAM.first_step found no gradients: call loss.backward() before optimizer.step()")
        scaled = [p.grad * p.abs() if self.adaptive else p.grad for p in params]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(s).to(params[0].device)
                                                     for s in scaled]))
        for p, s in zip(params, scaled, strict=True):
            self._old[p] = p.detach().clone()
            p.add_((s * p.abs() if self.adaptive else s) * (self.rho / (norm.to(p.device) + 1e-12)))
        if zero_grad:
            self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def _restore(self) -> None:
        for p, old in self._old.items():
            p.copy_(old)
        self._old.clear()

    @torch.no_grad()
    def second_step(self) -> None:
        """Put the weights back to ``w`` exactly and let the base optimiser step with the current gradients."""
        self._restore()
        self.base.step()

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One SAM update; ``closure`` re-runs the forward pass and ``backward()`` (then clips, if clipping).

        Returns:
            What ``closure`` returned (the loss at the perturbed weights).
        """
        if closure is None:
            raise ValueError("SAM.step needs a closure that recomputes the loss and calls backward() "
                             "(the optimizer announces this with requires_closure = True)")
        self.first_step(zero_grad=True)
        try:
            with torch.enable_grad():
                loss = closure()
        finally:
            self._restore()  # also when the closure raises, so the model is never left perturbed
        self.base.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base.load_state_dict(state_dict)
        self._link()  # the base replaced its param_groups list and state dict


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """Inside the block, BatchNorm layers in training mode normalise with batch statistics as usual but leave
    their running statistics alone (momentum 0): use it around SAM's second forward pass so the running
    statistics are updated once per batch, at the unperturbed weights (``num_batches_tracked`` included)."""
    saved = {m: (m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
             for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training}
    for m in saved:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in saved.items():
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def clip_gradients(parameters: nn.Module | Iterable[torch.Tensor], max_norm: float) -> float:
    """Scale the gradients so their global L2 norm is at most ``max_norm``; returns the norm before clipping.

    Parameters without a gradient are skipped. A non-finite norm is returned as is (the caller decides what to
    do); the gradients are then scaled by NaN, so do not step the optimiser.
    """
    params = list(parameters.parameters() if isinstance(parameters, nn.Module) else parameters)
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))


# --------------------------------------------------------------------------------------------- schedules
class EpochScheduler:
    """Per-epoch learning rate: a linear warm-up, then the schedule named by ``cfg`` (see :class:`SchedulerConfig`).

    Call :meth:`step` once after each epoch (after validation, with its accuracy for ``plateau``). During 0-based
    epoch ``t`` every group's learning rate is ``warmup(t) * schedule(base, e)``, where ``base`` is the group's
    learning rate when the scheduler was built, ``warmup(t) = (t + 1) / (warmup_epochs + 1)`` for
    ``t < warmup_epochs`` (else 1) and ``e = max(0, t - warmup_epochs)``: every schedule's clock starts after the
    warm-up, ``multistep`` milestones included. ``min_lr`` is a floor for ``cosine`` and ``plateau`` only.

    ``plateau`` follows Keras's ReduceLROnPlateau (PAtt-Lite's recipe): after ``patience`` epochs in a row without
    a new best validation accuracy (strictly greater), the rate is multiplied by ``gamma`` and the count restarts
    (torch's ``ReduceLROnPlateau(mode="max", patience=max(patience - 1, 0), threshold=0)``). Epochs stepped without an
    accuracy (``val_acc=None``, e.g. with ``eval_every > 1``) do not count, nor do warm-up epochs, though the best
    accuracy is tracked through them.

    The rate is a closed-form function of this object's state (:meth:`state_dict`), so a resumed run gets the
    same sequence as an uninterrupted one; ``load_state_dict`` also sets the optimiser's rates.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, epochs: int):
        self.optimizer, self.cfg, self.epochs = optimizer, cfg, epochs
        self.base_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        self.epoch = 0  # epochs stepped so far = 0-based index of the epoch the current rate is for
        self.best: float | None = None
        self.bad_epochs = 0
        self.reductions = 0
        self._apply()

    @property
    def lr(self) -> float:
        """Current learning rate of parameter group 0."""
        return float(self.optimizer.param_groups[0]["lr"])

    def lr_at(self, base: float, epoch: int) -> float:
        """Learning rate during 0-based ``epoch`` for a group whose base rate is ``base`` (plateau: as of now)."""
        cfg, w = self.cfg, self.cfg.warmup_epochs
        warm = (epoch + 1) / (w + 1) if epoch < w else 1.0
        e = max(0, epoch - w)
        floor = min(cfg.min_lr, base)
        if cfg.name == "step":
            lr = base * cfg.gamma ** (e // cfg.step_size)
        elif cfg.name == "multistep":
            lr = base * cfg.gamma ** bisect.bisect_right(sorted(cfg.milestones), e)
        elif cfg.name == "exponential":
            lr = base * cfg.gamma**e
        elif cfg.name == "cosine":  # reaches min_lr just after the last epoch, never during one
            span = max(1, self.epochs - w)
            lr = floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * min(e, span) / span))
        elif cfg.name == "plateau":
            lr = max(base * cfg.gamma**self.reductions, floor)
        elif cfg.name == "inverse_time":
            lr = base / (1 + cfg.decay_rate * e / cfg.decay_epochs)
        else:
            lr = base
        return warm * lr

    def step(self, val_acc: float | None = None) -> None:
        """End of an epoch: update the plateau count from ``val_acc`` and set the next epoch's learning rate."""
        if self.cfg.name == "plateau" and val_acc is not None:
            if self.best is None or val_acc > self.best:
                self.best, self.bad_epochs = float(val_acc), 0
            elif self.epoch >= self.cfg.warmup_epochs:
                self.bad_epochs += 1
                if self.bad_epochs >= self.cfg.patience:
                    self.reductions, self.bad_epochs = self.reductions + 1, 0
        self.epoch += 1
        self._apply()

    def _apply(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = self.lr_at(base, self.epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "base_lrs": list(self.base_lrs), "best": self.best,
                "bad_epochs": self.bad_epochs, "reductions": self.reductions}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.base_lrs, self.best = int(state["epoch"]), list(state["base_lrs"]), state["best"]
        self.bad_epochs, self.reductions = int(state["bad_epochs"]), int(state["reductions"])
        self._apply()


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, epochs: int) -> EpochScheduler:
    """The per-epoch schedule of ``cfg`` over ``epochs`` epochs; sets the first epoch's rate at once."""
    return EpochScheduler(optimizer, cfg, epochs)
