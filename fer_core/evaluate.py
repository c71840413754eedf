"""Evaluation: a model's logits on held images, classification metrics, and the ``eval/`` files of a run.

The same pieces serve the trainer (validation each epoch, final test) and ``python -m fer_core evaluate RUN``::

    results = evaluate_run("runs/<id>", split="test")      # {"test/all": {...}, "test/occlusion": {...}}

Each result holds accuracy, mean_class_accuracy (mean per-class recall over classes present), macro_f1 (over
classes present in the labels or the predictions), confusion (rows = true class, columns = predicted, every
class of the label set even if absent), class_names and n; per-sample predictions go to a CSV next to it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fer_core import io
from fer_core.batches import index_batches, iter_batches
from fer_core.config import Config, load_config
from fer_core.runs import load_run_model, load_split
from fer_core.transforms import BatchTransform

logger = logging.getLogger(__name__)

ProgressFn = Callable[[dict], None]
"""Progress callback: receives one event dict (``{"event": "epoch", ...}``); the CLI or the app draws it."""


# --------------------------------------------------------------------------------------------- predictions
@torch.inference_mode()
def predict_logits(model: nn.Module, images: torch.Tensor, transform: BatchTransform,
                   batch_size: int = 256) -> torch.Tensor:
    """Logits (float32, on the CPU) for every image of a uint8 tensor, in eval mode."""
    was_training = model.training
    model.eval()
    batches = index_batches(len(images), batch_size)
    outs = [model(transform(x)).float().cpu() for x in iter_batches(images, batches, transform.device)]
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0, getattr(model.cfg, "num_classes", 0))


# --------------------------------------------------------------------------------------------- metrics
def confusion_matrix(labels: np.ndarray | torch.Tensor, preds: np.ndarray | torch.Tensor,
                     num_classes: int) -> np.ndarray:
    """``num_classes x num_classes`` counts, rows = true class, columns = predicted class."""
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    return np.bincount(labels * num_classes + preds, minlength=num_classes**2).reshape(num_classes, num_classes)


def classification_metrics(labels: np.ndarray | torch.Tensor, preds: np.ndarray | torch.Tensor,
                           num_classes: int) -> dict[str, Any]:
    """accuracy, mean_class_accuracy, macro_f1, per-class recall/precision/f1/support, confusion, n.

    Mean class accuracy averages recall over classes present in ``labels``; macro F1 averages F1 over classes
    present in ``labels`` or ``preds`` (like scikit-learn with ``labels=`` those classes).
    """
    cm = confusion_matrix(labels, preds, num_classes)
    n = int(cm.sum())
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(1).astype(float), cm.sum(0).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        precision = np.where(predicted > 0, tp / predicted, np.nan)
        denom = support + predicted
        f1 = np.where(denom > 0, 2 * tp / denom, np.nan)
    present = support > 0

    def clean(values: np.ndarray) -> list[float | None]:
        return [None if np.isnan(v) else float(v) for v in values]

    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else float("nan"),
        "mean_class_accuracy": float(np.nanmean(recall[present])) if present.any() else float("nan"),
        "macro_f1": float(np.nanmean(f1[denom > 0])) if (denom > 0).any() else float("nan"),
        "per_class": {"recall": clean(recall), "precision": clean(precision), "f1": clean(f1),
                      "support": [int(s) for s in support]},
        "confusion": cm.tolist(),
    }


# --------------------------------------------------------------------------------------------- eval files
def write_eval(run_dir: str | os.PathLike, split: str, subset: str, labels: torch.Tensor, logits: torch.Tensor,
               class_names: Sequence[str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compute metrics and write ``eval/<split>_<subset>.json`` and ``..._predictions.csv``; return the metrics."""
    import pandas as pd

    probs = logits.float().softmax(1)
    confidence, preds = probs.max(1)
    result = {"split": split, "subset": subset, "class_names": list(class_names),
              **classification_metrics(labels, preds, len(class_names)),
              "loss": float(F.cross_entropy(logits.float(), labels)) if len(labels) else float("nan"),
              **(extra or {})}
    result = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in result.items()}  # empty subset
    json_path, csv_path = io.eval_paths(run_dir, split, subset)
    columns = {"index": np.arange(len(labels)), "label": labels.numpy(), "pred": preds.numpy(),
               "correct": (preds == labels).numpy(), "confidence": confidence.numpy()}
    # one column per class, built at once (an identity-pretraining run has hundreds of classes)
    columns.update({f"prob_{name}": probs[:, i].numpy() for i, name in enumerate(class_names)})
    table = pd.DataFrame(columns)
    io.atomic_write_text(csv_path, table.to_csv(index=False, float_format="%.5f"))
    io.atomic_write_json(json_path, result)
    return result


def evaluate_model(model: nn.Module, cfg: Config, run_dir: str | os.PathLike, *, splits: Sequence[str] | None = None,
                   subsets: Sequence[str] | None = None, device: str = "cpu", progress: ProgressFn | None = None,
                   extra: dict[str, Any] | None = None) -> dict[str, dict]:
    """Evaluate ``model`` on each split and subset (default: the config's ``eval`` section) and write ``eval/``.

    ``subsets=None`` means ``all`` plus every subset the data set declares. Returns results keyed
    ``"<split>/<subset>"``.
    """
    transform = BatchTransform(model.cfg, device=device, channels_last=cfg.train.channels_last)
    results = {}
    for split in splits or cfg.eval.splits:
        where = {"placement": cfg.train.data_placement, "device": device, "workers": cfg.train.num_workers}
        ds, split_images, split_labels = load_split(cfg.data, split, **where)
        names = subsets or cfg.eval.subsets or ["all", *getattr(ds, "subsets", ())]
        for subset in names:
            images, labels = split_images, split_labels
            if subset != "all":
                valid = getattr(ds, "subsets", ())
                if subset not in valid:
                    raise ValueError(f"data set {cfg.data.name!r} has no subset {subset!r}; "
                                     f"valid: all, {', '.join(valid)}")
                images, labels = _subset_of(cfg, split, subset, split_images, split_labels, where)
            logits = predict_logits(model, images, transform, batch_size=max(cfg.train.batch_size, 128))
            result = write_eval(run_dir, split, subset, labels, logits, model.cfg.class_names, extra)
            results[f"{split}/{subset}"] = result
            if subset == "all":
                _write_factors(run_dir, split, ds, labels, logits)
            if progress:
                progress({"event": "eval", "split": split, "subset": subset, "n": result["n"],
                          "accuracy": result["accuracy"], "macro_f1": result["macro_f1"]})
    return results


def _write_factors(run_dir: str | os.PathLike, split: str, ds: Any, labels: torch.Tensor,
                   logits: torch.Tensor) -> None:
    """Accuracy per bin of SynthFACS's factors (``eval/factors/<split>.json``, :mod:`fer_core.factors`) from the
    ``all`` logits already computed; nothing for other data sets."""
    from fer_core.factors import write_factors

    write_factors(run_dir, split, ds, labels, logits)


def _subset_of(cfg: Config, split: str, subset: str, images: Any, labels: torch.Tensor,
               where: dict[str, Any]) -> tuple[Any, torch.Tensor]:
    """A subset's images and labels: picked out of the split already in memory where the data set says which of
    its samples the subset holds (``split_positions``), else loaded on their own."""
    from fer_core.data import build_dataset

    if isinstance(images, torch.Tensor):
        sub = build_dataset(cfg.data.name, root=cfg.data.root, split=split, subset=subset, **cfg.data.options)
        positions = getattr(sub, "split_positions", None)
        if positions is not None:
            index = torch.as_tensor(np.asarray(positions, dtype=np.int64))
            return images[index.to(images.device)], labels[index]
    _, images, labels = load_split(cfg.data, split, subset, **where)
    return images, labels


def evaluate_run(run_dir: str | os.PathLike, split: str | Sequence[str] = "test",
                 subsets: Sequence[str] | None = None, *, weights: str = "best", device: str | None = None,
                 progress: ProgressFn | None = None) -> dict[str, dict]:
    """Re-evaluate a finished (or interrupted) run from its ``config.yaml`` and ``checkpoints/<weights>``."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.yaml")
    device = device or cfg.train.device
    model = load_run_model(run_dir, weights=weights, device=device)
    splits = [split] if isinstance(split, str) else list(split)
    return evaluate_model(model, cfg, run_dir, splits=splits, subsets=subsets, device=device, progress=progress,
                          extra={"weights": weights})
