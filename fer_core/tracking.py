"""Experiment trackers a run also writes to: TensorBoard event files, always, and MLflow, when asked.

The run folder stays the source of truth (``metrics.jsonl``, ``eval/``, ``status.json``); trackers get a copy of
what the trainer writes there, as it writes it:

    <run>/tensorboard/events.out.tfevents.*   # `tensorboard --logdir runs` shows every run, one per folder

- Per epoch, every number of the ``metrics.jsonl`` row as a scalar at step = epoch: ``train_loss`` becomes
  ``train/loss``, ``val_acc`` ``val/acc``; the others keep their name under ``epoch/`` (``epoch/lr``,
  ``epoch/seconds``, SCN's ``epoch/scn_relabelled``...).
- After the final evaluation, per split and subset: accuracy, mean class accuracy, macro F1 and loss as scalars
  (``test/all/accuracy``...) and the confusion matrix as an image (``confusion/test/all``), at step = the epoch of
  the evaluated weights.
- A resumed run purges the events after its checkpoint's epoch (TensorBoard's ``purge_step``), so a curve never
  shows an epoch twice, as ``metrics.jsonl`` keeps only the epochs up to the checkpoint.

MLflow (``train.tracking.mlflow_uri``, with the ``mlflow`` or ``mlflow-skinny`` package): one MLflow run per FER Lab
run in the experiment ``train.tracking.mlflow_experiment`` (default: the run's group, else ``fer-lab``), named by
the run id, with the config flattened into parameters, the same metrics and the confusion matrices as artifacts;
its MLflow run id is kept in ``<run>/tracking.json`` so a resumed run goes on logging into the same MLflow run, and
the MLflow run ends FINISHED, FAILED or KILLED with the FER Lab run. A tracker that cannot be reached when the run
starts fails the run before training (what the user asked for cannot be done); one that fails later is logged
once and dropped, and the run goes on: a tracker is never worth losing a run for.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
MLFLOW_STATE = "tracking.json"
SPLIT_PREFIXES = ("train_", "val_")
EVAL_SCALARS = ("accuracy", "mean_class_accuracy", "macro_f1", "loss", "ece", "ece_adaptive", "nll", "brier")
MLFLOW_STATES = {"done": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}


class TrackingError(RuntimeError):
    """A tracker the config asks for cannot be used (raised before training starts)."""


def scalar_tag(key: str) -> str:
    """The TensorBoard tag of a ``metrics.jsonl`` key: ``train_loss`` -> ``train/loss``, ``lr`` -> ``epoch/lr``."""
    for prefix in SPLIT_PREFIXES:
        if key.startswith(prefix):
            return f"{prefix[:-1]}/{key[len(prefix):]}"
    return f"epoch/{key}"


def numbers(row: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics row (booleans and text such as a stage name left out), ``epoch`` too."""
    out = {}
    for key, value in row.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if np.isfinite(value):
            out[key] = float(value)
    return out


def confusion_figure(confusion: Sequence[Sequence[int]], class_names: Sequence[str], title: str):
    """A matplotlib figure of a confusion matrix: counts, rows normalised for the colour (true class per row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(confusion, dtype=float)
    rows = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n), dpi=100)
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if rows[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def flat_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as ``{"train.optimizer.lr": "0.001", ...}`` (MLflow parameters are flat strings)."""
    from fer_core.compare import flatten

    return {key: json.dumps(value) if isinstance(value, list | dict | bool) or value is None else str(value)
            for key, value in flatten(data, prefix).items()}


class TensorBoardTracker:
    """Writes a run's curves and evaluation into ``<run>/tensorboard`` (see the module docstring)."""

    name = "tensorboard"

    def __init__(self, run_dir: Path, start_epoch: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a resumed run drops the events of epochs after its checkpoint (written before it was killed)
        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR),
                                    purge_step=start_epoch + 1 if start_epoch else None)

    def log_epoch(self, row: Mapping[str, Any]) -> None:
        values = numbers(row)
        epoch = int(values.pop("epoch"))
        for key, value in values.items():
            self.writer.add_scalar(scalar_tag(key), value, epoch)
        self.writer.flush()

    def log_eval(self, results: Mapping[str, Mapping[str, Any]], step: int) -> None:
        for key, result in results.items():
            for name in EVAL_SCALARS:
                if result.get(name) is not None:
                    self.writer.add_scalar(f"{key}/{name}", float(result[name]), step)
            if result.get("confusion") is not None:
                fig = confusion_figure(result["confusion"], result["class_names"], f"{key} (n={result['n']})")
                self.writer.add_figure(f"confusion/{key}", fig, step, close=True)
        self.writer.flush()

    def close(self, state: str) -> None:
        self.writer.close()


class MlflowTracker:
    """Logs a run into MLflow (see the module docstring); ``tracking.json`` keeps its MLflow run id."""

    name = "mlflow"

    def __init__(self, run_dir: Path, uri: str, experiment: str, params: Mapping[str, str]):
        try:
            from mlflow import MlflowClient
        except ImportError as err:
            raise TrackingError("train.tracking.mlflow_uri is set but MLflow is not installed: pip install "
                               "mlflow-skinny (or mlflow), or remove train.tracking.mlflow_uri") from err
        self.client = MlflowClient(tracking_uri=uri)
        state_path = run_dir / MLFLOW_STATE
        known = json.loads(state_path.read_text()) if state_path.exists() else {}
        if known.get("mlflow_uri") == uri and known.get("mlflow_run_id"):
            self.run_id = known["mlflow_run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            logger.info("MLflow: going on in run %s at %s", self.run_id, uri)
            return
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        run = self.client.create_run(experiment_id, run_name=run_dir.name, tags={"fer_lab.run_dir": str(run_dir)})
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        items = sorted(params.items())
        for start in range(0, len(items), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=[Param(k, v[:6000]) for k, v in items[start:start + 100]])
        from fer_core import io

        io.atomic_write_json(state_path, {"mlflow_uri": uri, "mlflow_run_id": self.run_id,
                                          "mlflow_experiment": experiment})
        logger.info("MLflow: run %s in experiment %r at %s", self.run_id, experiment, uri)

    def log_epoch(self, row: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        values = numbers(row)
        epoch = int(values.pop("epoch"))
        stamp = _now_ms()
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, epoch) for k, v in values.items()])

    def log_eval(self, results: Mapping[str, Mapping[str, Any]], step: int) -> None:
        import matplotlib.pyplot as plt
        from mlflow.entities import Metric

        stamp = _now_ms()
        metrics = [Metric(f"{key.replace('/', '_')}_{name}", float(r[name]), stamp, step)
                   for key, r in results.items() for name in EVAL_SCALARS if r.get(name) is not None]
        self.client.log_batch(self.run_id, metrics=metrics)
        with tempfile.TemporaryDirectory() as tmp:
            for key, result in results.items():
                if result.get("confusion") is None:
                    continue
                fig = confusion_figure(result["confusion"], result["class_names"], f"{key} (n={result['n']})")
                path = Path(tmp) / f"confusion_{key.replace('/', '_')}.png"
                fig.savefig(path)
                plt.close(fig)
                self.client.log_artifact(self.run_id, str(path), artifact_path="confusion")

    def close(self, state: str) -> None:
        self.client.set_terminated(self.run_id, status=MLFLOW_STATES.get(state, "FAILED"))


def _now_ms() -> int:
    return int(time.time() * 1000)


class Trackers:
    """The trackers of one run; every call goes to each, and a tracker that fails after the start is dropped.

    Args:
        cfg: the run's config (``train.tracking``).
        run_dir: the run folder.
        enabled: False on every process but the one that writes the run folder (rank 0).
    """

    def __init__(self, cfg, run_dir: str | os.PathLike, enabled: bool = True):
        self.cfg, self.run_dir, self.enabled = cfg, Path(run_dir), enabled
        self.active: list[Any] = []
        self.started = False

    def start(self, start_epoch: int) -> None:
        """Open the trackers for a run whose first new epoch is ``start_epoch + 1`` (0 for a new run). An MLflow
        that cannot be reached raises here, before any training."""
        if not self.enabled or self.started:
            return
        self.started = True
        opts = self.cfg.train.tracking
        if opts.tensorboard:
            self.active.append(TensorBoardTracker(self.run_dir, start_epoch))
        if opts.mlflow_uri:
            experiment = opts.mlflow_experiment or self.cfg.group or "fer-lab"
            try:
                tracker = MlflowTracker(self.run_dir, opts.mlflow_uri, experiment,
                                        flat_params(self.cfg.to_dict()))
            except TrackingError:
                raise
            except Exception as err:
                raise TrackingError(f"MLflow at train.tracking.mlflow_uri={opts.mlflow_uri!r} cannot be used: "
                                   f"{type(err).__name__}: {err}. Fix the URI (a tracking server, or e.g. "
                                   "sqlite:///mlflow.db) or remove train.tracking.mlflow_uri") from err
            self.active.append(tracker)

    def _each(self, method: str, *args) -> None:
        for tracker in list(self.active):
            try:
                getattr(tracker, method)(*args)
            except Exception as err:  # a tracker is never worth losing a run for
                logger.warning("%s tracking stopped (%s: %s); the run folder still has everything",
                               tracker.name, type(err).__name__, err)
                self.active.remove(tracker)

    def log_epoch(self, row: Mapping[str, Any]) -> None:
        self._each("log_epoch", row)

    def log_eval(self, results: Mapping[str, Mapping[str, Any]], step: int) -> None:
        self._each("log_eval", results, step)

    def close(self, state: str) -> None:
        """End every tracker with the run's final state (``done``, ``failed`` or ``cancelled``)."""
        self._each("close", state)
        self.active = []
