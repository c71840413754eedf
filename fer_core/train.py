"""The trainer: plain functions in the manner of torchvision's classification reference.

``train(config, run_dir)`` fills a run directory (see ``shared/DESIGN.md``): ``config.yaml``, ``status.json``
(running with pid, epoch/epochs, then done | failed | cancelled), ``metrics.jsonl`` (one line per epoch),
``checkpoints/{best,last}.safetensors`` + ``last_state.pt`` (resumable), ``eval/`` and ``log.txt``.
The data set is held in memory as uint8 (``fer_core.data.materialize``) and converted batch by batch on the
training device. Library code never prints: progress goes to the ``progress`` callback and to ``log.txt``.
SIGTERM stops training at the next batch (progress up to the last finished epoch is already saved) and marks
the run cancelled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import signal
import threading
import time
import traceback
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fer_core import io
from fer_core.config import Config, OptimizerConfig, SchedulerConfig, load_config
from fer_core.evaluate import (
    BatchTransform,
    ProgressFn,
    classification_metrics,
    evaluate_model,
    load_split,
    model_from_config,
    predict_logits,
)
from fer_core.models import count_params

logger = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised inside the training loop when a stop was requested (SIGTERM)."""


# --------------------------------------------------------------------------------------------- building blocks
def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) random generators."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; raises with advice if CUDA is asked for but absent."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device is {name!r} but this torch sees no CUDA device; "
                           "use --set train.device=cpu")
    return torch.device(name)


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """SGD / Adam / AdamW; no weight decay on biases and normalisation parameters (1-D tensors)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_factor(cfg: SchedulerConfig, epochs: int, base_lr: float, epoch: int) -> float:
    """Multiplier of the base learning rate during 0-based ``epoch`` (linear warm-up, then the schedule)."""
    if epoch < cfg.warmup_epochs:
        return (epoch + 1) / (cfg.warmup_epochs + 1)
    e = epoch - cfg.warmup_epochs
    if cfg.name == "step":
        return cfg.gamma ** (e // cfg.step_size)
    if cfg.name == "exponential":
        return cfg.gamma**e
    if cfg.name == "cosine":
        span = max(1, epochs - cfg.warmup_epochs)  # reaches min_lr just after the last epoch, never during one
        floor = min(cfg.min_lr / base_lr, 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(e, span) / span))
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: SchedulerConfig,
                    epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-epoch LambdaLR following :func:`lr_factor`."""
    base = optimizer.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(cfg, epochs, base, e))


def train_one_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                    labels: torch.Tensor, transform: BatchTransform, *, batch_size: int, generator: torch.Generator,
                    epoch: int = 0, progress: ProgressFn | None = None,
                    stop: threading.Event | None = None) -> dict[str, float]:
    """One pass over ``images`` in a random order; returns ``train_loss`` and ``train_acc``."""
    model.train()
    device = transform.device
    order = torch.randperm(len(images), generator=generator)
    starts = [s for s in range(0, len(order), batch_size) if len(order) - s > 1 or s == 0]  # no batch of 1
    total_loss, correct, seen = 0.0, 0, 0
    for step, start in enumerate(starts):
        if stop is not None and stop.is_set():
            raise Cancelled(f"stopped during epoch {epoch}")
        idx = order[start:start + batch_size]
        x = transform(images[idx], generator)
        y = labels[idx].to(device, non_blocking=True)
        logits = model(x)
        loss = criterion(logits, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch}, batch {step}; "
                                     "lower train.optimizer.lr or check the data")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(idx)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(idx)
        if progress:
            progress({"event": "batch", "epoch": epoch, "batch": step + 1, "batches": len(starts),
                      "loss": loss.item()})
    return {"train_loss": total_loss / max(seen, 1), "train_acc": correct / max(seen, 1)}


def evaluate(model: nn.Module, criterion: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             transform: BatchTransform, batch_size: int = 256) -> dict[str, float]:
    """Loss, accuracy and macro F1 of ``model`` on in-memory images (inference mode)."""
    logits = predict_logits(model, images, transform, batch_size)
    metrics = classification_metrics(labels, logits.argmax(1), logits.shape[1])
    return {"loss": float(criterion(logits, labels)), "acc": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[threading.Event]:
    """An event set by SIGTERM while inside the block (handler only installable in the main thread)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _log_to(run_dir: Path) -> Iterator[None]:
    handler = logging.FileHandler(run_dir / "log.txt", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


# --------------------------------------------------------------------------------------------- main entry
def train(config: Config | Mapping[str, Any] | str | os.PathLike, run_dir: str | os.PathLike,
          progress: ProgressFn | None = None, *, resume: bool = False) -> dict[str, Any]:
    """Train, checkpoint and evaluate one run in ``run_dir`` (created if needed).

    Args:
        config: a :class:`Config`, a dict or a YAML path (validated).
        run_dir: the run folder; with ``resume=True`` it must hold ``checkpoints/last*``.
        progress: called with event dicts: ``phase``, ``batch``, ``epoch``, ``eval``, ``done``.
        resume: continue from the last finished epoch instead of starting over.

    Returns:
        ``{"state", "run_dir", "best_val_acc", "best_epoch", "results"}``; ``state`` is ``done`` or ``cancelled``.

    Raises:
        Exception: whatever failed, after writing ``state: failed`` and the error into ``status.json``.
    """
    cfg = load_config(config)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    emit = progress or (lambda event: None)
    with _log_to(run_dir), _stop_on_sigterm() as stop:
        try:
            return _train(cfg, run_dir, emit, stop, resume)
        except (Cancelled, KeyboardInterrupt) as err:
            logger.warning("cancelled: %s", err or type(err).__name__)
            io.write_status(run_dir, state="cancelled", finished=time.time())
            emit({"event": "done", "state": "cancelled"})
            return {"state": "cancelled", "run_dir": str(run_dir)}
        except BaseException as err:
            logger.error("failed:\n%s", traceback.format_exc())
            summary = traceback.format_exception_only(type(err), err)[-1].strip()
            frames = traceback.extract_tb(err.__traceback__)[-3:]
            where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))
            io.write_status(run_dir, state="failed", error=summary, error_at=where, finished=time.time())
            raise


def _train(cfg: Config, run_dir: Path, emit: ProgressFn, stop: threading.Event, resume: bool) -> dict[str, Any]:
    ckpt_dir = run_dir / "checkpoints"
    if resume:
        status = io.read_status(run_dir)
        if status.get("pid") not in (None, os.getpid()) and io.run_state(run_dir, status) in ("running", "queued"):
            raise RuntimeError(f"run {run_dir.name} is still {status['state']} in process {status['pid']}; "
                               "cancel it before resuming")
    io.atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    io.write_status(run_dir, state="running", pid=os.getpid(), epochs=cfg.train.epochs, error=None,
                    started=time.time(), **({} if resume else {"epoch": 0}))
    logger.info("%s run %s: %s on %s", "resuming" if resume else "starting", run_dir.name, cfg.model.name,
                cfg.data.name)
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.seed)

    emit({"event": "phase", "phase": "data"})
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_ds, x_train, y_train = load_split(cfg.data, "train")
        _, x_val, y_val = load_split(cfg.data, "val")
    for warning in caught:
        logger.warning("%s", warning.message)
    logger.info("data: %d train, %d val images %s in %.1f s", len(x_train), len(x_val), tuple(x_train.shape[1:]),
                time.perf_counter() - t0)
    class_names = list(train_ds.classes)
    model = model_from_config(cfg, class_names).to(device)
    report = getattr(model, "load_report", None)
    logger.info("model %s: %s parameters, input %s; %s", cfg.model.name, f"{count_params(model):,}",
                "x".join(map(str, model.cfg.input_size)), report.summary() if report else "random initialisation")
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg.train.optimizer)
    scheduler = build_scheduler(optimizer, cfg.train.scheduler, cfg.train.epochs)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
    meta = {"class_names": json.dumps(class_names), "model": cfg.model.name}
    start_epoch, best, best_epoch = 0, -1.0, 0
    if resume:
        state = io.load_trainer_state(ckpt_dir, "last")
        io.load_weights(model, ckpt_dir / "last.safetensors")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        start_epoch, best, best_epoch = state["epoch"], state["best_val_acc"], state["best_epoch"]
        kept = [m for m in io.read_metrics(run_dir) if m.get("epoch", 0) <= start_epoch]
        io.atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in kept))
        logger.info("resumed after epoch %d (best val acc %.4f at epoch %d)", start_epoch, best, best_epoch)

    aug = cfg.train.augment
    fmt = {"device": device, "channels_last": cfg.train.channels_last}
    train_tf = BatchTransform(model.cfg, hflip=aug.hflip, crop_padding=aug.crop_padding, **fmt)
    eval_tf = BatchTransform(model.cfg, **fmt)
    epochs, bs = cfg.train.epochs, cfg.train.batch_size
    emit({"event": "phase", "phase": "train", "epochs": epochs, "start_epoch": start_epoch,
          "train_size": len(x_train), "val_size": len(x_val)})
    for epoch in range(start_epoch + 1, epochs + 1):
        t = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        row: dict[str, Any] = {"epoch": epoch, **train_one_epoch(
            model, criterion, optimizer, x_train, y_train, train_tf, batch_size=bs, generator=gen, epoch=epoch,
            progress=emit, stop=stop)}
        if stop.is_set():
            raise Cancelled(f"stopped after epoch {epoch - 1}")
        if epoch % cfg.train.eval_every == 0 or epoch == epochs:
            val = evaluate(model, criterion, x_val, y_val, eval_tf, batch_size=max(bs, 128))
            row.update(val_loss=val["loss"], val_acc=val["acc"], val_macro_f1=val["macro_f1"])
        scheduler.step()
        row.update(lr=lr, seconds=round(time.perf_counter() - t, 3))
        if row.get("val_acc", -1.0) > best:
            best, best_epoch = row["val_acc"], epoch
            io.save_checkpoint(ckpt_dir, model, "best", metadata={**meta, "epoch": str(epoch)})
        io.append_jsonl(run_dir / "metrics.jsonl", row)
        io.save_checkpoint(ckpt_dir, model, "last", metadata={**meta, "epoch": str(epoch)}, extra_state={
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch,
            "best_val_acc": best, "best_epoch": best_epoch, "rng": _rng_state()})
        io.write_status(run_dir, epoch=epoch, best_val_acc=best, best_epoch=best_epoch)
        logger.info("epoch %d/%d %s", epoch, epochs,
                    " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
        emit({"event": "epoch", "epochs": epochs, **row})

    emit({"event": "phase", "phase": "eval"})
    if (ckpt_dir / "best.safetensors").exists():
        io.load_weights(model, ckpt_dir / "best.safetensors")
    results = evaluate_model(model, cfg, run_dir, device=str(device), progress=emit,
                             extra={"weights": "best", "epoch": best_epoch})
    for key, r in results.items():
        logger.info("eval %s: accuracy %s, mean class accuracy %s, macro F1 %s (n=%d)", key,
                    *(f"{r[k]:.4f}" if r[k] is not None else "-" for k in ("accuracy", "mean_class_accuracy",
                                                                            "macro_f1")), r["n"])
    test_acc = results.get("test/all", {}).get("accuracy")
    io.write_status(run_dir, state="done", finished=time.time(), test_acc=test_acc)
    emit({"event": "done", "state": "done", "test_acc": test_acc})
    return {"state": "done", "run_dir": str(run_dir), "best_val_acc": best, "best_epoch": best_epoch,
            "results": results}
