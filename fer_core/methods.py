"""Training methods: how a batch becomes a loss. The trainer's loop is the same for all of them.

A method owns the training label table (keyed by sample index, the ``index`` every data set returns), so SCN's
relabelling changes the method's table and never the data set. The trainer calls, per batch,
``method.step(model, x, idx, epoch)`` inside autocast and gets a :class:`StepResult`; per epoch,
``method.end_epoch(epoch)`` for extra metrics and files, then, on the epochs it validates,
``method.observe_validation(epoch, val_acc)`` (before the checkpoint); ``state_dict()`` / ``load_state_dict()`` go
into the resumable trainer state.

* :class:`StandardTraining` - cross-entropy on hard labels (label smoothing, class weights).
* :class:`SCNTraining` - Self-Cure Network: logit-weighted cross-entropy, rank regularisation, relabelling of the
  low-importance group (the paper) or of every sample (the authors' code); writes ``scn/epoch_NNN.csv``
  (per-sample importance weight, group, label, clean label) and ``scn/relabels_NNN.csv`` (relabel events) in the
  run directory.
* :class:`SoftTargetTraining` - label distribution learning (targets from the data set or a teacher run) and
  pseudo labels (a teacher run's softmax, with a weighted hard-label term).

Models with part attention (``forward_attention``) can add RAN's region-biased loss (``train.region_bias``).
"""

from __future__ import annotations

import csv
import io as _io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fer_core import io
from fer_core.config import Config, LDLMethod, PseudoLabelMethod
from fer_core.config import SCNMethod as SCNConfig
from fer_core.losses import (
    kl_to_targets,
    rank_regularization,
    region_biased_loss,
    soft_target_cross_entropy,
)

logger = logging.getLogger(__name__)


@dataclass
class TrainData:
    """The training split as the methods see it (labels on the CPU, indexed by sample index)."""

    images: Any                          # uint8 N x C x H x W, on the host or the device, or StreamedImages
    labels: torch.Tensor                 # int64 N, the labels training starts from (after any injected noise)
    clean_labels: torch.Tensor           # int64 N, the labels before noise (equal to labels when there is none)
    class_names: list[str]
    label_dists: torch.Tensor | None = None   # float N x C, when the data set has soft labels


@dataclass
class StepResult:
    """One batch: the loss to minimise, the logits, the labels it was trained towards, and scalars to average."""

    loss: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor
    stats: dict[str, torch.Tensor] = field(default_factory=dict)  # detached scalars, averaged per epoch


class StandardTraining:
    """Cross-entropy on the current labels, with label smoothing and optional class weights."""

    def __init__(self, cfg: Config, data: TrainData, run_dir: Path, device: torch.device,
                 class_weights: torch.Tensor | None = None, write_files: bool = True):
        self.cfg, self.run_dir, self.device, self.write_files = cfg, run_dir, device, write_files
        self.labels = data.labels.clone()
        self._epoch_start_labels = self.labels.clone()
        self.clean_labels = data.clean_labels
        self.num_classes = len(data.class_names)
        self.class_weights = None if class_weights is None else class_weights.to(device)
        self.region_bias = cfg.train.region_bias

    # -- pieces shared by the methods
    def hard_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), y, weight=self.class_weights,
                               label_smoothing=self.cfg.train.label_smoothing)

    def forward(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Logits, plus the region-biased loss term (zero unless configured) and its stats."""
        if self.region_bias.weight <= 0:
            return model(x), x.new_zeros(()), {}
        if not hasattr(model, "forward_attention"):
            raise ValueError(f"train.region_bias needs a model with part attention (ran, region_attention); "
                             f"{model.cfg.name} has none")
        out = model.forward_attention(x)
        if out.weights.shape[1] < 2:
            raise ValueError("train.region_bias needs regions (model.options.regions: true)")
        rb = region_biased_loss(out.weights.float(), self.region_bias.margin)
        return out.logits, self.region_bias.weight * rb, {"region_bias_loss": rb.detach()}

    # -- the interface the trainer uses
    def step(self, model: nn.Module, x: torch.Tensor, idx: torch.Tensor, epoch: int,
             record: bool = True) -> StepResult:
        """The loss of one batch (``idx``: sample indices of ``x``); ``record=False`` for a second pass over the
        same batch (SAM), which must not update per-sample records or labels."""
        y = self.labels[idx].to(self.device, non_blocking=True)
        logits, extra, stats = self.forward(model, x)
        return StepResult(self.hard_loss(logits, y) + extra, logits, y, stats)

    def synchronize(self, world) -> None:
        """Under data parallelism each rank changed only the labels of its own samples this epoch: combine."""
        if world.distributed:
            from fer_core import distributed

            delta = distributed.all_sum(self.labels - self._epoch_start_labels, world)
            self.labels = self._epoch_start_labels + delta
        self._epoch_start_labels = self.labels.clone()

    def end_epoch(self, epoch: int) -> dict[str, float]:
        return {}

    def observe_validation(self, epoch: int, val_acc: float) -> dict[str, float]:
        """The validation accuracy after 0-based ``epoch`` (only on the epochs the trainer validates), reported
        after :meth:`end_epoch` and before the checkpoint; returns extra metrics for the epoch's row."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"labels": self.labels.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.labels = state["labels"].clone()
        self._epoch_start_labels = self.labels.clone()


class SCNTraining(StandardTraining):
    """Self-Cure Network (Wang et al., CVPR 2020): logit-weighted cross-entropy, rank regularisation, relabelling.

    The knobs (:class:`~fer_core.config.SCNMethod`), each with the paper's rule as default and the authors'
    ``src/train.py`` as the option:

    * ``loss``: ``paper`` = ``gamma * L_RR + (1 - gamma) * L_WCE``; ``code`` = ``L_WCE + L_RR`` (their line
      ``loss = criterion(outputs, targets) + RR_loss``). ``L_WCE`` is :meth:`hard_loss` on the weighted logits
      (plain cross-entropy unless class weights or label smoothing are configured, which the authors' code has not).
    * ``relabel_scope``: ``low`` relabels only the batch's low-importance group (the paper); ``all`` every sample
      of the batch past the margin (their ``Pmax - Pgt > margin_2`` over the whole batch). In both the rule reads
      the softmax of the *weighted* logits ``alpha * fc(x)`` of the training forward pass, the same tensor the loss
      uses (their ``torch.softmax(outputs, dim=1)``), and ``P_max - P_given > margin_2`` with ``margin_2 >= 0``
      already implies that the argmax differs from the label.
    * ``relabel_start``: ``epoch`` from 0-based ``relabel_epoch`` on; ``plateau`` from the epoch after validation
      accuracy has not improved for ``relabel_patience`` epochs (:meth:`observe_validation`). Either way the start
      is kept in :meth:`state_dict`, so a resumed run starts relabelling exactly where an uninterrupted one does.

    A relabel takes effect after the epoch that decided it (:meth:`flush`): in the authors' code the data set is
    written in place and a sample is drawn once per epoch, so its new label is also first used the next epoch.
    """

    def __init__(self, cfg: Config, data: TrainData, run_dir: Path, device: torch.device,
                 class_weights: torch.Tensor | None = None, write_files: bool = True):
        super().__init__(cfg, data, run_dir, device, class_weights, write_files)
        self.m: SCNConfig = cfg.train.method  # type: ignore[assignment]
        n = len(self.labels)
        self._weights = torch.full((n,), float("nan"))
        self._low = torch.zeros(n, dtype=torch.bool)
        self._events: list[tuple[int, int, int, int]] = []  # (index, old, new, clean)
        self._pending: list[tuple] = []  # this epoch's batches not yet applied (see flush)
        self._initial_labels = self.labels.clone()  # to tell injected noise from relabelling
        # the first 0-based epoch that relabels (None: not decided yet, relabel_start plateau) and the plateau count
        self.relabel_from: int | None = self.m.relabel_epoch if self.m.relabel_start == "epoch" else None
        self._val_best: float | None = None
        self._val_best_epoch = -1

    def relabels_in(self, epoch: int) -> bool:
        """Whether 0-based ``epoch`` relabels."""
        return self.relabel_from is not None and epoch >= self.relabel_from

    def loss(self, rr: torch.Tensor, wce: torch.Tensor) -> torch.Tensor:
        """The total loss from its two terms, as ``loss`` says (``paper`` or ``code``)."""
        if self.m.loss == "code":
            return wce + rr
        return self.m.gamma * rr + (1 - self.m.gamma) * wce

    def step(self, model: nn.Module, x: torch.Tensor, idx: torch.Tensor, epoch: int,
             record: bool = True) -> StepResult:
        if not hasattr(model, "forward_attention"):
            raise ValueError(f"train.method scn needs model.name: scn (got {model.cfg.name}, which has no "
                             "importance weights)")
        y = self.labels[idx].to(self.device, non_blocking=True)
        out = model.forward_attention(x)
        weights = out.weights.float().reshape(-1)
        rr, low = rank_regularization(weights, self.m.beta, self.m.margin_1)
        wce = self.hard_loss(out.logits, y)
        loss = self.loss(rr, wce)
        with torch.no_grad():
            if not record:
                return StepResult(loss, out.logits, y, {})
            # kept on the device and read back once per epoch (flush): no host-device synchronisation per batch
            change = self.relabel_mask(out.logits.detach().float(), y, low) if self.relabels_in(epoch) else None
            self._pending.append((idx, weights.detach(), low, y, change))
        return StepResult(loss, out.logits, y, {"rr_loss": rr.detach(), "wce_loss": wce.detach(),
                                               "mean_weight": weights.detach().mean()})

    def relabel_mask(self, logits: torch.Tensor, y: torch.Tensor, low: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Which samples of a batch to relabel, and to what: those whose top probability (softmax of the weighted
        ``logits``) beats the given label's by more than margin_2, in the low-importance group (``low``) or in the
        whole batch (``relabel_scope: all``)."""
        probs = F.softmax(logits, dim=1)
        p_max, arg = probs.max(dim=1)
        p_given = probs.gather(1, y.view(-1, 1)).squeeze(1)
        mask = (p_max - p_given > self.m.margin_2) & (arg != y)
        return (mask & low if self.m.relabel_scope == "low" else mask), arg

    def flush(self) -> None:
        """Apply the batches recorded since the last flush, in order: importance weights, groups and relabels.
        A sample is seen once per epoch, so its label changes only after the epoch that relabels it."""
        pending, self._pending = self._pending, []
        for idx, weights, low, y, change in pending:
            idx, weights, low, y = idx.cpu(), weights.cpu(), low.cpu(), y.cpu()
            self._weights[idx] = weights
            self._low[idx] = low
            if change is None:
                continue
            mask, arg = change[0].cpu(), change[1].cpu()
            which, old, new = idx[mask], y[mask], arg[mask]
            for i, o, nw in zip(which.tolist(), old.tolist(), new.tolist(), strict=True):
                self._events.append((i, o, nw, int(self.clean_labels[i])))
            self.labels[which] = new

    def synchronize(self, world) -> None:
        """Combine the ranks' importance weights, groups and relabel events (each saw its own samples)."""
        self.flush()
        if world.distributed:
            from fer_core import distributed

            seen = (~torch.isnan(self._weights)).float()
            total = distributed.all_sum(torch.nan_to_num(self._weights), world)
            count = distributed.all_sum(seen, world)
            self._weights = torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))
            # a sample's group is the one the rank that saw it this epoch gave it (the other ranks still hold an
            # earlier epoch's); samples no rank saw this epoch keep theirs
            low = distributed.all_sum((self._low & (seen > 0)).int(), world) > 0
            self._low = torch.where(count > 0, low, self._low)
            self._events = [e for events in distributed.all_gather_objects(self._events, world) for e in events]
        super().synchronize(world)

    def end_epoch(self, epoch: int) -> dict[str, float]:
        """Write this epoch's weights and relabel events under ``scn/``; return summary metrics."""
        self.flush()
        if self.write_files:
            self._write_epoch_files(epoch)
        noisy = self.labels != self.clean_labels
        seen = ~torch.isnan(self._weights)
        row = {"scn_relabelled": len(self._events),
               "scn_relabel_fixed": sum(new == clean for _, _, new, clean in self._events),
               "scn_relabel_broke": sum(old == clean for _, old, _, clean in self._events),
               "scn_label_noise": float(noisy.float().mean()),
               "scn_relabel_active": float(self.relabels_in(epoch))}
        was_noisy = self._was_noisy & seen
        if was_noisy.any() and (~self._was_noisy & seen).any():  # SCN's claim: noisy samples get low weights
            row["scn_weight_noisy"] = float(self._weights[was_noisy].mean())
            row["scn_weight_clean"] = float(self._weights[~self._was_noisy & seen].mean())
        self._events = []
        self._weights.fill_(float("nan"))
        return row

    def observe_validation(self, epoch: int, val_acc: float) -> dict[str, float]:
        """``relabel_start: plateau``: count the epochs since the best validation accuracy (strictly greater is
        better); once ``relabel_patience`` have passed without a new best, relabelling starts with the next epoch
        and stays on. Every data-parallel rank sees the same accuracy, so they all decide alike."""
        if self.m.relabel_start != "plateau" or self.relabel_from is not None:
            return {}
        if self._val_best is None or val_acc > self._val_best:
            self._val_best, self._val_best_epoch = float(val_acc), epoch
        elif epoch - self._val_best_epoch >= self.m.relabel_patience:
            self.relabel_from = epoch + 1
            logger.info("SCN: validation accuracy has not improved for %d epochs (best %.4f at epoch %d): "
                        "relabelling from epoch %d on (epochs numbered as in metrics.jsonl)",
                        epoch - self._val_best_epoch, self._val_best, self._val_best_epoch + 1, epoch + 2)
        return {}

    def _write_epoch_files(self, epoch: int) -> None:
        out = self.run_dir / "scn"
        out.mkdir(exist_ok=True)
        buf = _io.StringIO()
        w = csv.writer(buf)
        w.writerow(["index", "weight", "group", "label", "clean_label"])
        for i in range(len(self.labels)):
            weight = self._weights[i].item()
            w.writerow([i, "" if np.isnan(weight) else f"{weight:.5f}", "low" if self._low[i] else "high",
                        int(self.labels[i]), int(self.clean_labels[i])])
        io.atomic_write_text(out / f"epoch_{epoch:03d}.csv", buf.getvalue())
        buf = _io.StringIO()
        w = csv.writer(buf)
        w.writerow(["index", "old_label", "new_label", "clean_label"])
        w.writerows(self._events)
        io.atomic_write_text(out / f"relabels_{epoch:03d}.csv", buf.getvalue())

    @property
    def _was_noisy(self) -> torch.Tensor:
        return self._initial_labels != self.clean_labels

    def state_dict(self) -> dict[str, Any]:
        self.flush()
        return {"labels": self.labels.clone(), "initial_labels": self._initial_labels.clone(),
                "relabel_from": self.relabel_from, "val_best": self._val_best, "val_best_epoch": self._val_best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.labels = state["labels"].clone()
        self._epoch_start_labels = self.labels.clone()
        self._initial_labels = state["initial_labels"].clone()
        if self.m.relabel_start == "plateau":  # (``epoch``: the config says when; older checkpoints lack these)
            self.relabel_from = state.get("relabel_from")
            self._val_best, self._val_best_epoch = state.get("val_best"), state.get("val_best_epoch", -1)



class SoftTargetTraining(StandardTraining):
    """Soft targets per sample (label distributions or a teacher's pseudo labels) plus a weighted hard-label term.

    ``ldl``: loss ``CE(soft) (or KL) + hard_weight * CE(hard)``; ``pseudo_label``:
    ``(1 - hard_weight) * CE(soft) + hard_weight * CE(hard)``. Targets are a table ``N x C`` keyed by sample index:
    the data set's ``label_dists``, or a teacher run's softmax (at ``temperature``) computed once on the
    un-augmented training images (EfficientFace computes it on every augmented view; with flips and small crops
    the difference is small, and this way the teacher costs one pass instead of one per epoch).
    """

    def __init__(self, cfg: Config, data: TrainData, run_dir: Path, device: torch.device,
                 class_weights: torch.Tensor | None = None, write_files: bool = True):
        super().__init__(cfg, data, run_dir, device, class_weights, write_files)
        self.m: LDLMethod | PseudoLabelMethod = cfg.train.method  # type: ignore[assignment]
        if isinstance(self.m, LDLMethod) and self.m.source == "dataset":
            if data.label_dists is None:
                raise ValueError(f"train.method ldl with source: dataset needs soft labels, but data set "
                                 f"{cfg.data.name} has none; use source: teacher with a teacher_run")
            self.targets, self.source = data.label_dists.float(), f"data set {cfg.data.name} label_dist"
        else:
            if not self.m.teacher_run:
                raise ValueError("train.method.teacher_run is required for soft targets from a teacher")
            self.targets = teacher_targets(self.m.teacher_run, data, self.m.temperature, device)
            self.source = f"teacher run {self.m.teacher_run}"
        if self.targets.shape != (len(data.labels), self.num_classes):
            raise ValueError(f"soft targets from {self.source} have shape {tuple(self.targets.shape)}, expected "
                             f"({len(data.labels)}, {self.num_classes})")
        agree = float((self.targets.argmax(1) == data.labels).float().mean())
        logger.info("soft targets from %s: argmax agrees with the training labels on %.1f%%", self.source,
                    100 * agree)

    def step(self, model: nn.Module, x: torch.Tensor, idx: torch.Tensor, epoch: int,
             record: bool = True) -> StepResult:
        y = self.labels[idx].to(self.device, non_blocking=True)
        q = self.targets[idx].to(self.device, non_blocking=True)
        logits, extra, stats = self.forward(model, x)
        lf = logits.float()
        soft = kl_to_targets(lf, q) if getattr(self.m, "loss", "ce") == "kl" else soft_target_cross_entropy(lf, q)
        hard = self.hard_loss(logits, y) if self.m.hard_weight > 0 else lf.new_zeros(())
        if isinstance(self.m, PseudoLabelMethod):
            loss = (1 - self.m.hard_weight) * soft + self.m.hard_weight * hard
        else:
            loss = soft + self.m.hard_weight * hard
        return StepResult(loss + extra, logits, y, {"soft_loss": soft.detach(), **stats})


def teacher_targets(run: str, data: TrainData, temperature: float, device: torch.device) -> torch.Tensor:
    """Softmax (at ``temperature``) of a finished run's best weights on every training image, columns ordered
    as ``data.class_names``."""
    from fer_core.evaluate import predict_logits
    from fer_core.runs import load_run_model
    from fer_core.transforms import BatchTransform

    model = load_run_model(run, device=device)
    teacher_names = list(model.cfg.class_names)
    missing = [c for c in data.class_names if c not in teacher_names]
    if missing:
        raise ValueError(f"teacher run {run} has no output for {missing} (its classes: {teacher_names})")
    logits = predict_logits(model, data.images, BatchTransform(model.cfg, device=device))
    logits = logits[:, [teacher_names.index(c) for c in data.class_names]]
    return F.softmax(logits / temperature, dim=1)


METHODS = {"standard": StandardTraining, "scn": SCNTraining, "ldl": SoftTargetTraining,
           "pseudo_label": SoftTargetTraining}


def build_method(cfg: Config, data: TrainData, run_dir: Path, device: torch.device,
                 class_weights: torch.Tensor | None = None, write_files: bool = True) -> StandardTraining:
    """The method object ``cfg.train.method`` names (``write_files=False`` on data-parallel ranks other than 0)."""
    return METHODS[cfg.train.method.name](cfg, data, run_dir, device, class_weights, write_files)
