"""Trackers (fer_core/tracking.py): TensorBoard event files read back with TensorBoard's own reader, MLflow against
a local store, resume without repeated epochs, and a tracker that fails never costing the run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fer_core import io, tracking
from fer_core.config import load_config
from fer_core.train import train

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml"


def _events(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir / tracking.TENSORBOARD_DIR), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _series(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _stop_after(epoch: int):
    def progress(event):
        if event["event"] == "epoch" and event["epoch"] == epoch:
            raise KeyboardInterrupt  # stopped right after this epoch's checkpoint

    return progress


def test_tags_follow_the_metrics_names():
    assert tracking.scalar_tag("train_loss") == "train/loss" and tracking.scalar_tag("val_acc") == "val/acc"
    assert tracking.scalar_tag("lr") == "epoch/lr" and tracking.scalar_tag("scn_relabelled") == "epoch/scn_relabelled"
    assert tracking.numbers({"epoch": 3, "stage": "head", "loss": float("nan"), "ok": True, "acc": 0.5}) == \
        {"epoch": 3.0, "acc": 0.5}
    assert tracking.flat_params({"train": {"optimizer": {"lr": 0.001}, "stages": None}, "tags": {}}) == \
        {"train.optimizer.lr": "0.001", "train.stages": "null", "tags": "{}"}


def test_tensorboard_has_every_epoch_and_the_evaluation_of_the_run_folder(smoke_run):
    run_dir, _ = smoke_run
    acc = _events(run_dir)
    metrics = io.read_metrics(run_dir)
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "lr", "seconds"):
        series = _series(acc, tracking.scalar_tag(key))
        assert [s for s, _ in series] == [m["epoch"] for m in metrics], key
        assert [v for _, v in series] == pytest.approx([m[key] for m in metrics], rel=1e-6), key
    evals = io.read_eval(run_dir)
    best_epoch = io.read_status(run_dir)["best_epoch"]
    for key, result in evals.items():
        for name in ("accuracy", "macro_f1"):
            assert _series(acc, f"{key}/{name}") == [(best_epoch, pytest.approx(result[name], rel=1e-6))]
        image = acc.Images(f"confusion/{key}")
        assert len(image) == 1 and image[0].step == best_epoch and image[0].width > 100
        assert image[0].encoded_image_string[:4] == b"\x89PNG"


def test_a_resumed_run_drops_the_epochs_after_its_checkpoint(tmp_path):
    cfg = load_config(SMOKE, ["train.epochs=3"])
    run_dir = tmp_path / "run"
    assert train(cfg, run_dir, progress=_stop_after(2))["state"] == "cancelled"
    # a run killed after writing epoch 3's events but before its checkpoint: the events go further than the run
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run_dir / tracking.TENSORBOARD_DIR)) as writer:
        writer.add_scalar("train/loss", 123.0, 3)
    assert train(load_config(run_dir / "config.yaml"), run_dir, resume=True)["state"] == "done"
    series = _series(_events(run_dir), "train/loss")
    assert [s for s, _ in series] == [1, 2, 3]
    assert [v for _, v in series] == pytest.approx([m["train_loss"] for m in io.read_metrics(run_dir)], rel=1e-6)


def test_tensorboard_can_be_turned_off(tmp_path):
    cfg = load_config(SMOKE, ["train.epochs=1", "train.tracking.tensorboard=false"])
    assert train(cfg, tmp_path / "run")["state"] == "done"
    assert not (tmp_path / "run" / tracking.TENSORBOARD_DIR).exists()


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch) -> str:
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store behind this switch
    return (tmp_path / "mlruns").as_uri()


def test_mlflow_gets_the_config_the_curves_and_the_confusion_matrices(tmp_path, mlflow_store):
    from mlflow import MlflowClient

    cfg = load_config(SMOKE, [f"train.tracking.mlflow_uri={mlflow_store}", "group=tiny",
                              "train.tracking.tensorboard=false"])
    run_dir = tmp_path / "runs" / "tiny-run"
    assert train(cfg, run_dir, progress=_stop_after(1))["state"] == "cancelled"
    client = MlflowClient(tracking_uri=mlflow_store)
    experiment = client.get_experiment_by_name("tiny")
    [first] = client.search_runs([experiment.experiment_id])
    assert first.info.status == "KILLED" and first.info.run_name == "tiny-run"

    assert train(load_config(run_dir / "config.yaml"), run_dir, resume=True)["state"] == "done"
    [run] = client.search_runs([experiment.experiment_id])  # the resumed run went on in the same MLflow run
    assert run.info.run_id == first.info.run_id and run.info.status == "FINISHED"
    assert run.data.params["train.optimizer.lr"] == "0.003" and run.data.params["model.name"] == "small_cnn"
    metrics = io.read_metrics(run_dir)
    history = client.get_metric_history(run.info.run_id, "val_acc")
    assert [(h.step, h.value) for h in history] == [(m["epoch"], pytest.approx(m["val_acc"])) for m in metrics]
    test_acc = io.read_eval(run_dir)["test/all"]["accuracy"]
    assert run.data.metrics["test_all_accuracy"] == pytest.approx(test_acc)
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "confusion")]
    assert "confusion/confusion_test_all.png" in artifacts
    assert io.read_status(run_dir)["state"] == "done"


def test_an_mlflow_that_cannot_be_used_fails_the_run_before_training(tmp_path):
    pytest.importorskip("mlflow")
    cfg = load_config(SMOKE, ["train.tracking.mlflow_uri=nosuch://tracker"])
    with pytest.raises(tracking.TrackingError, match="nosuch://tracker"):
        train(cfg, tmp_path / "run")
    status = io.read_status(tmp_path / "run")
    assert status["state"] == "failed" and "train.tracking.mlflow_uri" in status["error"]
    assert io.read_metrics(tmp_path / "run") == []


def test_a_tracker_failing_mid_run_is_dropped_and_the_run_finishes(tmp_path, monkeypatch):
    def broken(self, row):
        raise OSError("disk full")

    monkeypatch.setattr(tracking.TensorBoardTracker, "log_epoch", broken)
    cfg = load_config(SMOKE)
    result = train(cfg, tmp_path / "run")
    assert result["state"] == "done" and len(io.read_metrics(tmp_path / "run")) == 2
    log = (tmp_path / "run" / "log.txt").read_text()
    assert log.count("tensorboard tracking stopped (OSError: disk full)") == 1
    assert np.isfinite(io.read_eval(tmp_path / "run")["test/all"]["accuracy"])
