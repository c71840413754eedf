"""The trainer: plain functions in the manner of torchvision's classification reference.

``train(config, run_dir)`` fills a run directory (docs/CONTRACTS.md): ``config.yaml``, ``status.json``
(running with pid, epoch/epochs, then done | failed | cancelled), ``metrics.jsonl`` (one line per epoch),
``checkpoints/{best,last}.safetensors`` + ``last_state.pt`` (resumable), ``calibration.json`` (the temperature
fitted on the validation split, :func:`fer_core.evaluate.calibrate_model`), ``eval/``, ``log.txt`` and, for SCN,
``scn/``. The data set is held in memory as uint8 (``fer_core.data.materialize``) and converted batch by batch on
the training device (``fer_core.transforms``). Library code never prints: progress goes to the ``progress``
callback and to ``log.txt``.

What a batch's loss is belongs to the method (:mod:`fer_core.methods`: standard, SCN, label distributions,
pseudo labels); what an update is belongs to the optimiser (:mod:`fer_core.optim`: SAM announces that it needs a
closure). Training runs as one or more stages (``train.stages``: e.g. a frozen backbone, then finetuning with
frozen BatchNorm), each with its own optimiser, schedule and early stopping with restore of its best weights.

Resume: ``last_state.pt`` holds the weights, optimiser, scheduler, method (label table), stage and RNG state in
one atomically written file, and each epoch's batch order and augmentation come from a generator seeded by
(seed, epoch); so a run killed at any moment and resumed ends with the same weights and metrics as one that ran
through. SIGTERM stops training at the next batch and marks the run cancelled; it resumes from the last finished
epoch. A non-finite loss stops the run as failed, naming the epoch and batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
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
import torch.nn.functional as F
from torch import nn

from fer_core import distributed, io, runs, tracking
from fer_core.batches import iter_batches
from fer_core.config import Config, StageConfig, load_config
from fer_core.distributed import SINGLE_PROCESS, World
from fer_core.evaluate import ProgressFn, calibrate_model, classification_metrics, evaluate_model, predict_logits
from fer_core.losses import balanced_class_weights, inject_ambiguous_label_noise, inject_label_noise, shuffle_labels
from fer_core.methods import StandardTraining, TrainData, build_method
from fer_core.models import count_params
from fer_core.optim import build_optimizer, build_scheduler, clip_gradients, frozen_bn_stats
from fer_core.transforms import BatchTransform

logger = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised inside the training loop when a stop was requested (SIGTERM)."""


# --------------------------------------------------------------------------------------------- building blocks
def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA); ``deterministic`` also asks torch for deterministic kernels."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; raises with advice if CUDA is asked for but absent."""
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"train.device is {name!r} but this torch sees no CUDA device; "
                               "use --set train.device=cpu")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise RuntimeError(f"train.device is {name!r} but there are {torch.cuda.device_count()} CUDA devices")
    return torch.device(name)


class Precision:
    """Autocast and loss scaling for ``train.precision`` (bf16 / fp16 on CUDA; fp32 everywhere else)."""

    def __init__(self, name: str, device: torch.device):
        self.enabled = device.type == "cuda" and name != "fp32"
        if name != "fp32" and not self.enabled:
            logger.info("train.precision %s is for CUDA; training in fp32 on %s", name, device)
        if self.enabled and name == "bf16" and not torch.cuda.is_bf16_supported():
            raise RuntimeError("this GPU has no bfloat16 support; use train.precision=fp16")
        self.dtype = torch.bfloat16 if name == "bf16" else torch.float16
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and name == "fp16")

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)


class _Forward(nn.Module):
    """``forward(x, attention)`` dispatching to the model's ``forward`` or ``forward_attention``, so a single
    DistributedDataParallel wrapper sees every training forward pass (and synchronises its gradients)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, attention: bool = False):
        return self.model.forward_attention(x) if attention else self.model(x)


CHECK_EVERY = 20
"""On a GPU the training loop reads a value back (the loss, for the progress line and the finite check) only every
this many batches, so the host queues work ahead of the GPU instead of waiting for it batch by batch."""


class TrainNet:
    """What the methods call during training: the model, or its DDP wrapper under ``torchrun``. Offers
    ``forward_attention`` exactly when the model does; ``cfg`` is the model's."""

    def __init__(self, model: nn.Module, world: World, device: torch.device, compile: bool = False):
        self.model, self.cfg = model, model.cfg
        self.net = distributed.wrap(_Forward(model), world, device) if world.distributed else None
        # torch.compile wraps the forward only: the checkpoints keep the plain model's parameter names
        self.forward = torch.compile(self.net or model) if compile else (self.net or model)
        if hasattr(model, "forward_attention"):
            self.forward_attention = self._attention

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def _attention(self, x: torch.Tensor):
        return self.net(x, attention=True) if self.net is not None else self.model.forward_attention(x)


def apply_stage(model: nn.Module, stage: StageConfig) -> list[nn.Module]:
    """Freeze and unfreeze for a stage; returns the BatchNorm layers to keep in inference mode while training.

    ``freeze: backbone`` freezes the modules ``model.cfg.backbone`` names; ``unfreeze_last: N`` unfreezes the last
    N of its modules that own parameters (BatchNorm included in the count, as Keras counts layers);
    ``freeze_bn`` keeps the backbone's BatchNorm layers frozen and in inference mode.
    """
    for p in model.parameters():
        p.requires_grad_(True)
    backbone = getattr(model.cfg, "backbone", ())
    if (stage.freeze == "backbone" or stage.freeze_bn or stage.unfreeze_last is not None) and not backbone:
        raise ValueError(f"stage {stage.name!r} freezes the backbone but {model.cfg.name} declares none")
    parts = [model.get_submodule(name) for name in backbone]
    layers = [m for part in parts for m in part.modules() if any(True for _ in m.parameters(recurse=False))]
    if stage.freeze == "backbone":
        for part in parts:
            part.requires_grad_(False)
        if stage.unfreeze_last:
            for m in layers[-stage.unfreeze_last:]:
                m.requires_grad_(True)
    frozen_bn = [m for part in parts for m in part.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm)] if stage.freeze_bn else []
    for m in frozen_bn:
        m.requires_grad_(False)
    if stage.drop_rate is not None:
        if not hasattr(model, "set_drop_rates"):
            raise ValueError(f"stage {stage.name!r} sets drop_rate but {model.cfg.name} has no set_drop_rates()")
        model.set_drop_rates(stage.drop_rate, stage.drop_rate, stage.drop_rate)
    return frozen_bn


def train_one_epoch(model: nn.Module, method: StandardTraining, optimizer: torch.optim.Optimizer,
                    images: torch.Tensor, transform: BatchTransform, *, batch_size: int, generator: torch.Generator,
                    epoch: int, precision: Precision, grad_clip_norm: float | None = None,
                    frozen_bn: list[nn.Module] = (), progress: ProgressFn | None = None,
                    stop: threading.Event | None = None, world: World = SINGLE_PROCESS,
                    net: TrainNet | None = None) -> dict[str, float]:
    """One pass over ``images`` in a random order; returns ``train_loss``, ``train_acc`` and the method's stats.

    Distributed: every rank draws the same order and takes its share of each batch (``batch_size`` is the global
    batch); augmentation draws come from a per-rank generator; the returned numbers are over all ranks.
    """
    model.train()
    for m in frozen_bn:
        m.eval()
    net = net or TrainNet(model, SINGLE_PROCESS, torch.device("cpu"))
    order = torch.randperm(len(images), generator=generator)
    smallest = 2 * world.size  # no batch of 1 for BatchNorm, and every rank gets a share (DDP needs all of them)
    starts = [s for s in range(0, len(order), batch_size) if len(order) - s >= smallest or s == 0]
    batches = [distributed.shard(order[start:start + batch_size], world) for start in starts]
    if world.distributed:
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator)) + world.rank)
    params = [p for p in model.parameters() if p.requires_grad]
    scaler = precision.scaler
    totals: dict[str, torch.Tensor] = {}
    first_bad: torch.Tensor | None = None  # index of the first batch whose loss was not finite (-1: none yet)
    total_loss: torch.Tensor | float = 0.0
    correct: torch.Tensor | int = 0
    seen = 0
    for step, (idx, raw) in enumerate(zip(batches, iter_batches(images, batches, transform.device), strict=True)):
        if stop is not None and stop.is_set():
            raise Cancelled(f"stopped during epoch {epoch}")
        x = transform(raw, generator)

        def forward_backward(second: bool = False, x=x, idx=idx, step=step):
            # SAM's second pass: same batch and targets at perturbed weights, BatchNorm statistics left alone
            with precision.autocast(), frozen_bn_stats(model) if second else contextlib.nullcontext():
                result = method.step(net, x, idx, epoch, record=not second)
            scaler.scale(result.loss).backward()
            if grad_clip_norm:
                scaler.unscale_(optimizer)
                clip_gradients(params, grad_clip_norm)
            return result

        optimizer.zero_grad(set_to_none=True)
        result = forward_backward()
        if getattr(optimizer, "requires_closure", False):
            optimizer.step(lambda: forward_backward(second=True).loss)
        else:
            scaler.step(optimizer)
            scaler.update()
        # A non-finite loss fails the run naming its batch. Looking at the loss is a host-device synchronisation,
        # so on a GPU the first bad batch is noted on the device and read only every CHECK_EVERY batches.
        loss = result.loss.detach()
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad) \
            if isinstance(first_bad, torch.Tensor) else torch.where(torch.isfinite(loss), -1, step)
        last = step + 1 == len(batches)
        if (loss.device.type == "cpu" or step % CHECK_EVERY == 0 or last) and int(first_bad) >= 0:
            raise FloatingPointError(f"loss is not finite at epoch {epoch}, batch {int(first_bad) + 1}; lower "
                                     "train.optimizer.lr, set train.grad_clip_norm, or check the data")
        n = len(idx)
        total_loss = total_loss + loss.float() * n  # tensors: no host-device sync per batch
        correct = correct + (result.logits.detach().argmax(1) == result.targets).sum()
        seen += n
        for k, v in result.stats.items():
            totals[k] = totals.get(k, 0.0) + torch.as_tensor(v).detach().float() * n
        if progress:
            event = {"event": "batch", "epoch": epoch, "batch": step + 1, "batches": len(starts)}
            if step % CHECK_EVERY == 0 or last:
                event["loss"] = float(loss)
            progress(event)
    names = sorted(totals)
    sums = torch.stack([torch.as_tensor(total_loss, dtype=torch.float32).cpu(),
                        torch.as_tensor(correct, dtype=torch.float32).cpu(), torch.tensor(float(seen)),
                        *[totals[k].cpu() for k in names]])
    sums = distributed.all_sum(sums, world).tolist()
    n = max(sums[2], 1)
    return {"train_loss": sums[0] / n, "train_acc": sums[1] / n, **{k: v / n for k, v in zip(names, sums[3:],
                                                                                               strict=True)}}


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, transform: BatchTransform,
             batch_size: int = 256) -> dict[str, float]:
    """Cross-entropy, accuracy and macro F1 of ``model`` on in-memory images (inference mode)."""
    logits = predict_logits(model, images, transform, batch_size)
    metrics = classification_metrics(labels, logits.argmax(1), logits.shape[1])
    return {"loss": float(F.cross_entropy(logits, labels)), "acc": metrics["accuracy"],
            "macro_f1": metrics["macro_f1"]}


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
    """Every ``fer_core`` logger (trainer, methods, data) writes into the run's ``log.txt`` while training."""
    handler = logging.FileHandler(run_dir / "log.txt", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    package = logging.getLogger("fer_core")
    level = package.level
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(level)
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
    world, device_name = distributed.init(cfg.train.device)
    if world.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    emit = (progress or (lambda event: None)) if world.main else (lambda event: None)
    logs = _log_to(run_dir) if world.main else contextlib.nullcontext()
    trackers = tracking.Trackers(cfg, run_dir, enabled=world.main)
    with logs, _stop_on_sigterm() as stop:
        try:
            result = _train(cfg, run_dir, emit, stop, resume, world, device_name, trackers)
            trackers.close("done")
            return result
        except (Cancelled, KeyboardInterrupt) as err:
            logger.warning("cancelled: %s", err or type(err).__name__)
            trackers.close("cancelled")
            if world.main:
                io.write_status(run_dir, state="cancelled", finished=time.time())
            emit({"event": "done", "state": "cancelled"})
            return {"state": "cancelled", "run_dir": str(run_dir)}
        except BaseException as err:
            trackers.close("failed")
            logger.error("failed:\n%s", traceback.format_exc())
            if world.main:
                summary = traceback.format_exception_only(type(err), err)[-1].strip()
                frames = traceback.extract_tb(err.__traceback__)[-3:]
                where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))
                io.write_status(run_dir, state="failed", error=summary, error_at=where, finished=time.time())
            raise
        finally:
            distributed.shutdown()



def _load_training_data(cfg: Config, device: torch.device) -> tuple[TrainData, Any, torch.Tensor]:
    """The training split (with any injected label noise) and the validation images and labels, placed as
    ``train.data_placement`` says (:mod:`fer_core.batches`)."""
    where = {"placement": cfg.train.data_placement, "device": device, "workers": cfg.train.num_workers}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_ds, x_train, y_train = runs.load_split(cfg.data, "train", **where)
        _, x_val, y_val = runs.load_split(cfg.data, "val", **where)
    for warning in caught:
        logger.warning("%s", warning.message)
    classes = list(train_ds.classes)
    clean = getattr(train_ds, "clean_labels", None)
    clean = y_train.clone() if clean is None else torch.as_tensor(clean, dtype=torch.long)
    if cfg.data.label_noise_mode == "ambiguous" and cfg.data.label_noise > 0:
        dists = getattr(train_ds, "label_dists", None)
        if dists is None:
            raise ValueError(f"data.label_noise_mode: ambiguous needs label distributions, which {cfg.data.name} "
                             "does not have (SynthFACS and FERPlus do); use label_noise_mode: uniform")
        labels = inject_ambiguous_label_noise(y_train, torch.as_tensor(dists), cfg.data.label_noise)
    else:
        labels = inject_label_noise(y_train, cfg.data.label_noise, len(classes), seed=cfg.seed * 7919 + 17)
    if cfg.data.label_noise > 0:
        logger.info("label noise %.2f (%s) injected: %d of %d training labels changed (clean labels kept)",
                    cfg.data.label_noise, cfg.data.label_noise_mode, int((labels != y_train).sum()), len(labels))
    if cfg.data.shuffle_labels:  # after any noise: the shuffled labels carry no information either way
        labels = shuffle_labels(labels, seed=cfg.seed * 7919 + 29)
        logger.info("training labels shuffled (data.shuffle_labels, seed %d): %d of %d differ from the clean labels; "
                    "expect chance accuracy on val/test", cfg.seed, int((labels != clean).sum()), len(labels))
    if (labels != clean).any():
        logger.info("training labels differ from the clean labels on %.1f%% of the samples",
                    100 * float((labels != clean).float().mean()))
    dists = getattr(train_ds, "label_dists", None) if cfg.train.method.name == "ldl" else None
    data = TrainData(images=x_train, labels=labels, clean_labels=clean, class_names=classes,
                     label_dists=None if dists is None else torch.as_tensor(dists, dtype=torch.float32))
    return data, x_val, y_val


def _fit_temperature(model: nn.Module, cfg: Config, run_dir: Path, x_val: Any, y_val: torch.Tensor,
                     device: torch.device) -> float | None:
    """Temperature scaling on the validation split already in memory (``calibration.json``), before the test
    evaluation, so the test results carry the numbers before and after. A fit that cannot be made (an empty
    validation split, non-finite logits) is a warning, not a failed run; a stale ``calibration.json`` is removed."""
    try:
        return calibrate_model(model, cfg, run_dir, weights="best", device=str(device), images=x_val,
                               labels=y_val)["temperature"]
    except ValueError as err:
        logger.warning("no temperature scaling: %s", err)
        io.calibration_path(run_dir).unlink(missing_ok=True)
        return None


def _train(cfg: Config, run_dir: Path, emit: ProgressFn, stop: threading.Event, resume: bool,
           world: World = SINGLE_PROCESS, device_name: str | None = None,
           trackers: tracking.Trackers | None = None) -> dict[str, Any]:
    trackers = trackers or tracking.Trackers(cfg, run_dir, enabled=False)
    ckpt_dir = runs.checkpoints_dir(run_dir)
    main = world.main  # only rank 0 writes the run directory
    state: dict[str, Any] | None = None
    if resume:
        if main:  # temporary files of atomic writes cut short by the kill that stopped the run
            for stale in [*run_dir.glob(".*.tmp"), *ckpt_dir.glob(".*.tmp")]:
                stale.unlink(missing_ok=True)
        status = io.read_status(run_dir)
        # (rank 0 alone: under DDP the others find rank 0 already named as the run's process)
        if main and status.get("pid") not in (None, os.getpid()) and \
                io.run_state(run_dir, status) in ("running", "queued"):
            raise RuntimeError(f"run {run_dir.name} is still {status['state']} in process {status['pid']}; "
                               "cancel it before resuming")
        if runs.resumable(run_dir):
            state = runs.load_trainer_state(ckpt_dir, "last")
        else:  # stopped before its first checkpoint: nothing to keep
            logger.warning("no checkpoint yet in %s: starting from the beginning", ckpt_dir)
            if main:
                io.atomic_write_text(run_dir / "metrics.jsonl", "")
    stages = cfg.train.resolved_stages()
    epochs = sum(st.epochs for st in stages)
    if cfg.data.root is None:  # record the folder actually read ($FER_DATA/<name>), so the run says what it used
        from fer_core.data import resolve_root

        found = resolve_root(cfg.data.name)
        cfg.data.root = None if found is None else str(found)
    if main:
        if state is None:  # a resumed run's config is written once its checkpoint has loaded into the model
            io.atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
        io.write_status(run_dir, state="running", pid=os.getpid(), epochs=epochs, error=None,
                        started=time.time(), **({} if state else {"epoch": 0}))
    logger.info("%s run %s: %s on %s, method %s", "resuming" if state else "starting", run_dir.name,
                cfg.model.name, cfg.data.name, cfg.train.method.name)
    device = resolve_device(device_name or cfg.train.device)
    if world.distributed:
        logger.info("distributed: %d processes (%s), global batch %d = %d per process", world.size,
                    "nccl" if device.type == "cuda" else "gloo", cfg.train.batch_size,
                    cfg.train.batch_size // world.size)
    seed_everything(cfg.seed, cfg.train.deterministic)

    emit({"event": "phase", "phase": "data"})
    t0 = time.perf_counter()
    if not main:
        distributed.barrier(world)  # rank 0 renders and caches the data first; the others then read the cache
    data, x_val, y_val = _load_training_data(cfg, device)
    if main:
        distributed.barrier(world)
    logger.info("data: %d train, %d val images %s in %.1f s", len(data.images), len(x_val),
                tuple(data.images.shape[1:]), time.perf_counter() - t0)
    class_names = data.class_names
    model = runs.model_from_config(cfg, class_names).to(device)
    if cfg.model.init_from and state is None:  # a resumed run loads its own checkpoint below instead
        model.load_report = runs.init_backbone(model, cfg.model.init_from, root=run_dir.parent)
    report = getattr(model, "load_report", None)
    logger.info("model %s: %s parameters, input %s; %s", cfg.model.name, f"{count_params(model):,}",
                "x".join(map(str, model.cfg.input_size)), report.summary() if report else "random initialisation")
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    weights = balanced_class_weights(data.labels, len(class_names)) if cfg.train.class_weights == "balanced" else None
    if weights is not None:
        logger.info("class weights: %s", ", ".join(f"{c} {w:.2f}" for c, w in zip(class_names, weights.tolist(),
                                                                                  strict=True)))
    method = build_method(cfg, data, run_dir, device, weights, write_files=main)
    if cfg.train.compile:
        logger.info("torch.compile: the first batches compile the model (a one-off cost)")
    precision = Precision(cfg.train.precision, device)
    meta = {"class_names": json.dumps(class_names), "model": cfg.model.name}
    progress = {"stage": 0, "stage_epoch": 0, "epoch": 0, "best_val_acc": -1.0, "best_epoch": 0,
                "stage_best_acc": -1.0, "stage_best_epoch": 0}
    if state is not None:
        model.load_state_dict(state["model"])
        method.load_state_dict(state["method"])
        _set_rng_state(state["rng"])
        progress.update({k: state[k] for k in progress})
        done_before = sum(st.epochs for st in stages[:-1])
        if progress["stage"] >= len(stages) and progress["epoch"] < epochs:
            # a finished run resumed with more epochs (e.g. --set train.epochs=30): its last stage goes on for the
            # added epochs; the finished stage kept no optimiser state, so the optimiser and schedule start afresh
            progress.update(stage=len(stages) - 1, stage_epoch=max(0, progress["epoch"] - done_before),
                            stage_best_acc=-1.0, stage_best_epoch=0)
            logger.info("training %d more epochs in stage %r (optimiser and schedule restart)",
                        epochs - progress["epoch"], stages[-1].name)
        if main:
            io.atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
            kept = [m for m in io.read_metrics(run_dir) if m.get("epoch", 0) <= progress["epoch"]]
            io.atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in kept))
        logger.info("resumed after epoch %d (stage %s, best val acc %.4f at epoch %d)", progress["epoch"],
                    stages[min(progress["stage"], len(stages) - 1)].name, progress["best_val_acc"],
                    progress["best_epoch"])

    trackers.start(progress["epoch"])  # (a tracker that cannot be used stops the run here, before any training)

    aug = cfg.train.augment
    train_tf = BatchTransform.from_config(model.cfg, aug, device=device, channels_last=cfg.train.channels_last)
    eval_tf = BatchTransform.from_config(model.cfg, None, device=device, channels_last=cfg.train.channels_last)
    bs = cfg.train.batch_size
    emit({"event": "phase", "phase": "train", "epochs": epochs, "start_epoch": progress["epoch"],
          "train_size": len(data.images), "val_size": len(x_val)})

    def checkpoint(optimizer=None, scheduler=None) -> None:
        if not main:
            return
        runs.save_checkpoint(ckpt_dir, model, "last", metadata={**meta, "epoch": str(progress["epoch"])},
                           extra_state={**progress, "model": model.state_dict(), "method": method.state_dict(),
                                        "optimizer": None if optimizer is None else optimizer.state_dict(),
                                        "scheduler": None if scheduler is None else scheduler.state_dict(),
                                        "rng": _rng_state()})

    for stage_index in range(progress["stage"], len(stages)):
        stage = stages[stage_index]
        frozen_bn = apply_stage(model, stage)
        # built per stage: DistributedDataParallel expects a gradient for exactly the parameters that required one
        # when it was built, and a stage freezes or unfreezes some (a frozen BatchNorm, a frozen backbone)
        net = TrainNet(model, world, device, compile=cfg.train.compile)
        optimizer = build_optimizer(model, stage.optimizer)
        scheduler = build_scheduler(optimizer, stage.scheduler, stage.epochs)
        if state is not None and state["stage"] == stage_index and state["optimizer"] is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        logger.info("stage %d/%d %r: %d epochs, %s of %s parameters trainable, %s lr %g%s", stage_index + 1,
                    len(stages), stage.name, stage.epochs, f"{trainable:,}", f"{count_params(model):,}",
                    stage.optimizer.name + (" + SAM" if stage.optimizer.sam.enabled else ""), stage.optimizer.lr,
                    f", {len(frozen_bn)} BatchNorm layers frozen" if frozen_bn else "")
        patience = stage.early_stopping.patience
        while progress["stage_epoch"] < stage.epochs:
            if patience is not None and progress["stage_best_epoch"] > 0 \
                    and progress["epoch"] - progress["stage_best_epoch"] >= patience:
                logger.info("early stopping: no val improvement for %d epochs in stage %r", patience, stage.name)
                break
            epoch = progress["epoch"] + 1
            t = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            row: dict[str, Any] = {"epoch": epoch, **train_one_epoch(
                model, method, optimizer, data.images, train_tf, batch_size=bs, generator=gen, epoch=epoch - 1,
                precision=precision, grad_clip_norm=cfg.train.grad_clip_norm, frozen_bn=frozen_bn,
                progress=emit, stop=stop, world=world, net=net)}
            if len(stages) > 1:
                row["stage"] = stage.name
            if stop.is_set():
                raise Cancelled(f"stopped after epoch {epoch - 1}")
            method.synchronize(world)
            row.update(method.end_epoch(epoch - 1))
            last_of_stage = progress["stage_epoch"] + 1 == stage.epochs
            if epoch % cfg.train.eval_every == 0 or last_of_stage or patience is not None:
                distributed.sync_buffers(model, world)  # same BatchNorm statistics, same val accuracy everywhere
                val = evaluate(model, x_val, y_val, eval_tf, batch_size=max(bs, 128))
                row.update(val_loss=val["loss"], val_acc=val["acc"], val_macro_f1=val["macro_f1"])
                row.update(method.observe_validation(epoch - 1, val["acc"]))  # SCN's relabel_start: plateau
            scheduler.step(row.get("val_acc"))
            row.update(lr=lr, seconds=round(time.perf_counter() - t, 3))
            progress.update(epoch=epoch, stage_epoch=progress["stage_epoch"] + 1)
            if row.get("val_acc", -1.0) > progress["stage_best_acc"]:
                progress.update(stage_best_acc=row["val_acc"], stage_best_epoch=epoch)
                if main:
                    runs.save_checkpoint(ckpt_dir, model, "stage_best", metadata={**meta, "epoch": str(epoch)})
            if row.get("val_acc", -1.0) > progress["best_val_acc"]:
                progress.update(best_val_acc=row["val_acc"], best_epoch=epoch)
                if main:
                    runs.save_checkpoint(ckpt_dir, model, "best", metadata={**meta, "epoch": str(epoch)})
            if main:
                io.append_jsonl(run_dir / "metrics.jsonl", row)
                trackers.log_epoch(row)
                checkpoint(optimizer, scheduler)
                io.write_status(run_dir, epoch=epoch, best_val_acc=progress["best_val_acc"],
                                best_epoch=progress["best_epoch"])
            distributed.barrier(world)  # the others wait for rank 0's checkpoint files
            logger.info("epoch %d/%d %s", epoch, epochs,
                        " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in row.items() if k != "epoch"))
            emit({"event": "epoch", "epochs": epochs, **row})
        more = stage_index + 1 < len(stages)  # after the last stage the final evaluation loads the best weights
        if more and stage.early_stopping.restore_best and runs.weights_path(run_dir, "stage_best").exists() \
                and progress["stage_best_epoch"] not in (0, progress["epoch"]):
            runs.load_weights(model, runs.weights_path(run_dir, "stage_best"))
            logger.info("stage %r ends: restored its best weights (epoch %d, val acc %.4f)", stage.name,
                        progress["stage_best_epoch"], progress["stage_best_acc"])
        progress.update(stage=stage_index + 1, stage_epoch=0, stage_best_acc=-1.0, stage_best_epoch=0)
        checkpoint()  # a stage boundary: the next stage starts from these weights with a fresh optimiser
        state = None
    best, best_epoch = progress["best_val_acc"], progress["best_epoch"]
    if not main:  # rank 0 alone evaluates on the test split and writes eval/
        distributed.barrier(world)
        return {"state": "done", "run_dir": str(run_dir), "best_val_acc": best, "best_epoch": best_epoch,
                "results": {}}
    runs.weights_path(run_dir, "stage_best").unlink(missing_ok=True)

    emit({"event": "phase", "phase": "eval"})
    temperature = None
    if runs.weights_path(run_dir, "best").exists():
        runs.load_weights(model, runs.weights_path(run_dir, "best"))
        temperature = _fit_temperature(model, cfg, run_dir, x_val, y_val, device)
    results = evaluate_model(model, cfg, run_dir, device=str(device), progress=emit,
                             extra={"weights": "best", "epoch": best_epoch}, temperature=temperature)
    for key, r in results.items():
        logger.info("eval %s: accuracy %s, mean class accuracy %s, macro F1 %s (n=%d)", key,
                    *(f"{r[k]:.4f}" if r[k] is not None else "-" for k in ("accuracy", "mean_class_accuracy",
                                                                            "macro_f1")), r["n"])
    trackers.log_eval(results, best_epoch or progress["epoch"])
    test_acc = results.get("test/all", {}).get("accuracy")
    io.write_status(run_dir, state="done", finished=time.time(), test_acc=test_acc)
    distributed.barrier(world)
    emit({"event": "done", "state": "done", "test_acc": test_acc})
    return {"state": "done", "run_dir": str(run_dir), "best_val_acc": best, "best_epoch": best_epoch,
            "results": results}
