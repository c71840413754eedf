"""Evaluation: a model's logits on held images, classification metrics, and the ``eval/`` files of a run.

The same pieces serve the trainer (validation each epoch, final test) and ``python -m fer_core evaluate RUN``::

    results = evaluate_run("runs/<id>", split="test")      # {"test/all": {...}, "test/occlusion": {...}}

Each result holds accuracy, mean_class_accuracy (mean per-class recall over classes present), macro_f1 (over
classes present in the labels or the predictions), confusion (rows = true class, columns = predicted, every
class of the label set even if absent), class_names and n (computed by scikit-learn), and the calibration of the
probabilities (:mod:`fer_core.calibration`): ece (15 equal-width bins), ece_adaptive (15 equal-mass bins), nll, brier
and reliability (the reliability diagram's bins). Per-sample predictions go to a CSV next to it.

Temperature scaling: ``calibrate_run("runs/<id>")`` fits one temperature on the validation split, writes
``calibration.json`` in the run and re-evaluates it; every eval file of a run with a temperature then also carries
``calibrated: {temperature, ece, ece_adaptive, nll, brier, reliability}`` (the accuracy does not change: dividing the
logits by a temperature changes no prediction). The trainer fits it at the end of training, before the test
evaluation. Eval files written before calibration existed lack these keys; readers treat them as missing.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fer_core import io
from fer_core.batches import index_batches, iter_batches
from fer_core.calibration import calibration_metrics, fit_temperature
from fer_core.config import Config, load_config
from fer_core.runs import load_run_model, load_split, stored_temperature, weights_digest, weights_path
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
    """``num_classes x num_classes`` counts, rows = true class, columns = predicted class (scikit-learn's)."""
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    if not len(labels):
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    return sk_confusion_matrix(labels, preds, labels=np.arange(num_classes))


def classification_metrics(labels: np.ndarray | torch.Tensor, preds: np.ndarray | torch.Tensor,
                           num_classes: int) -> dict[str, Any]:
    """accuracy, mean_class_accuracy, macro_f1, per-class recall/precision/f1/support, confusion, n (scikit-learn).

    Mean class accuracy averages recall over classes present in ``labels``; macro F1 averages F1 over classes
    present in ``labels`` or ``preds`` (like scikit-learn with ``labels=`` those classes). Per class, recall is None
    for a class absent from ``labels``, precision for a class never predicted, F1 for a class in neither.
    """
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    cm = confusion_matrix(labels, preds, num_classes)
    n = int(len(labels))
    classes = np.arange(num_classes)
    if n:
        # zero_division=nan: an undefined ratio (a class absent from labels or predictions) is NaN, not 0
        precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=classes, average=None,
                                                                         zero_division=np.nan)
    else:
        precision = recall = f1 = np.full(num_classes, np.nan)
        support = np.zeros(num_classes, dtype=np.int64)
    present = support > 0

    def clean(values: np.ndarray) -> list[float | None]:
        return [None if np.isnan(v) else float(v) for v in values]

    return {
        "n": n,
        "accuracy": float(accuracy_score(labels, preds)) if n else float("nan"),
        "mean_class_accuracy": float(np.mean(recall[present])) if present.any() else float("nan"),
        "macro_f1": float(np.nanmean(f1)) if (~np.isnan(f1)).any() else float("nan"),
        "per_class": {"recall": clean(recall), "precision": clean(precision), "f1": clean(f1),
                      "support": [int(s) for s in support]},
        "confusion": cm.tolist(),
    }


# --------------------------------------------------------------------------------------------- eval files
def write_eval(run_dir: str | os.PathLike, split: str, subset: str, labels: torch.Tensor, logits: torch.Tensor,
               class_names: Sequence[str], extra: dict[str, Any] | None = None,
               temperature: float | None = None) -> dict[str, Any]:
    """Compute metrics and write ``eval/<split>_<subset>.json`` and ``..._predictions.csv``; return the metrics.

    With a ``temperature`` (the run's, fitted on its validation split), the result also holds ``calibrated``: the
    calibration metrics of ``softmax(logits / temperature)``. The predictions CSV holds the uncalibrated
    probabilities."""
    import pandas as pd

    probs = logits.float().softmax(1)
    confidence, preds = probs.max(1)
    result = {"split": split, "subset": subset, "class_names": list(class_names),
              **classification_metrics(labels, preds, len(class_names)),
              "loss": float(F.cross_entropy(logits.float(), labels)) if len(labels) else float("nan"),
              **calibration_metrics(logits, labels),
              **(extra or {})}
    if temperature is not None:
        result["calibrated"] = {"temperature": float(temperature), **calibration_metrics(logits, labels, temperature)}
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
                   extra: dict[str, Any] | None = None, temperature: float | None = None) -> dict[str, dict]:
    """Evaluate ``model`` on each split and subset (default: the config's ``eval`` section) and write ``eval/``.

    ``subsets=None`` means ``all`` plus every subset the data set declares; ``temperature`` adds the calibrated
    metrics (:func:`write_eval`). Returns results keyed ``"<split>/<subset>"``.
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
            result = write_eval(run_dir, split, subset, labels, logits, model.cfg.class_names, extra, temperature)
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
    """Re-evaluate a finished (or interrupted) run from its ``config.yaml`` and ``checkpoints/<weights>``; with the
    run's temperature for these weights (``calibration.json``), the results carry the calibrated metrics too."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.yaml")
    device = device or cfg.train.device
    model = load_run_model(run_dir, weights=weights, device=device)
    splits = [split] if isinstance(split, str) else list(split)
    return evaluate_model(model, cfg, run_dir, splits=splits, subsets=subsets, device=device, progress=progress,
                          extra={"weights": weights}, temperature=stored_temperature(run_dir, weights))


# --------------------------------------------------------------------------------------------- temperature scaling
CALIBRATION_SPLIT = "val"
"""The split a temperature is fitted on: held-out faces, never the test faces it is judged on."""


def _no_validation(run_dir: Path, cfg: Config, why: str) -> ValueError:
    return ValueError(f"run {run_dir.name} cannot be temperature-scaled: its data set {cfg.data.name!r} {why}. A "
                      "temperature is fitted on the validation split (held-out faces, never the test faces it is "
                      "judged on); give the data set a validation split (for imagefolder: a val/ folder or "
                      "data.options.val_fraction) and train the run again")


def calibrate_model(model: nn.Module, cfg: Config, run_dir: str | os.PathLike, *, weights: str = "best",
                    device: str = "cpu", images: Any = None, labels: torch.Tensor | None = None) -> dict[str, Any]:
    """Fit ``model``'s temperature on the validation split and write the run's ``calibration.json``.

    ``model`` holds the run's ``checkpoints/<weights>`` (their SHA-256 is recorded, so the temperature is never
    applied to other weights). ``images`` and ``labels`` are the validation split when the caller has it in memory
    (the trainer), else it is loaded from the config. Returns what was written: ``temperature``, ``split``, ``n``,
    ``weights``, ``weights_sha256``, ``method``, ``at_bound`` (the fit stopped at the searched range's edge),
    ``before`` and ``after`` (accuracy and the calibration numbers on the validation split) and ``fitted`` (time).

    Raises:
        ValueError: the run's data set has no validation split, or it is empty (the message says so).
    """
    from fer_core import calibration
    from fer_core.transforms import BatchTransform

    run_dir = Path(run_dir)
    if images is None or labels is None:
        where = {"placement": cfg.train.data_placement, "device": device, "workers": cfg.train.num_workers}
        try:
            _, images, labels = load_split(cfg.data, CALIBRATION_SPLIT, **where)
        except (FileNotFoundError, ValueError) as err:
            raise _no_validation(run_dir, cfg, f"has no validation split ({err})") from None
    if not len(labels):
        raise _no_validation(run_dir, cfg, "has an empty validation split")
    transform = BatchTransform(model.cfg, device=device, channels_last=cfg.train.channels_last)
    logits = predict_logits(model, images, transform, batch_size=max(cfg.train.batch_size, 128))
    labels = labels.cpu()
    temperature = fit_temperature(logits, labels)
    accuracy = float((logits.argmax(1) == labels).float().mean())

    def summary(t: float) -> dict[str, Any]:
        numbers = calibration_metrics(logits, labels, t)
        return {"accuracy": accuracy, **{k: numbers[k] for k in ("ece", "ece_adaptive", "nll", "brier")}}

    low, high = calibration.TEMPERATURE_BOUNDS
    found = {
        "temperature": temperature, "split": CALIBRATION_SPLIT, "n": len(labels), "weights": weights,
        "weights_sha256": weights_digest(run_dir, weights) if weights_path(run_dir, weights).exists() else None,
        "method": "temperature scaling (Guo et al. 2017): one T minimising the validation NLL of softmax(logits / "
                  f"T), bounded search over log T in [{low}, {high}]",
        "at_bound": bool(min(abs(temperature - low), abs(temperature - high)) < 1e-3 * temperature),
        "before": summary(1.0), "after": summary(temperature), "fitted": time.time(),
    }
    if found["at_bound"]:
        logger.warning("run %s: the temperature fit stopped at the edge of its range (T=%.4g): the validation split "
                       "(%d faces) may be too small or too easy to calibrate on", run_dir.name, temperature,
                       len(labels))
    io.atomic_write_json(io.calibration_path(run_dir), found)
    logger.info("temperature scaling on %s (%d faces): T=%.4f, NLL %.4f -> %.4f, ECE %.4f -> %.4f", CALIBRATION_SPLIT,
                len(labels), temperature, found["before"]["nll"], found["after"]["nll"], found["before"]["ece"],
                found["after"]["ece"])
    return found


def calibrate_run(run: str | os.PathLike, *, weights: str = "best", device: str | None = None,
                  progress: ProgressFn | None = None) -> tuple[dict[str, Any], dict[str, dict]]:
    """Fit a run's temperature (:func:`calibrate_model`) and re-evaluate the splits and subsets it has eval files
    for (none yet: the config's ``eval`` section), so they carry the before/after numbers. Returns
    ``(calibration.json's content, the re-evaluated results keyed "<split>/<subset>")``.

    Raises:
        ValueError: the run's data set has no (or an empty) validation split.
        FileNotFoundError: the run has no such weights.
    """
    run_dir = io.resolve_run_dir(run)
    cfg = load_config(run_dir / "config.yaml")
    device = device or cfg.train.device
    model = load_run_model(run_dir, weights=weights, device=device)
    found = calibrate_model(model, cfg, run_dir, weights=weights, device=device)
    wanted: dict[str, list[str]] = {}
    for key in io.read_eval(run_dir):
        split, _, subset = key.partition("/")
        wanted.setdefault(split, []).append(subset)
    results: dict[str, dict] = {}
    for split, subsets in (wanted or {s: None for s in cfg.eval.splits}).items():
        results.update(evaluate_model(model, cfg, run_dir, splits=[split], subsets=subsets, device=device,
                                      progress=progress, extra={"weights": weights},
                                      temperature=found["temperature"]))
    return found, results
