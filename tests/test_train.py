"""The trainer: every file of a run, learning above chance, resume, failure and cancellation."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_core import io
from fer_core.config import load_config
from fer_core.evaluate import classification_metrics, evaluate_run
from fer_core.models import ModelConfig
from fer_core.train import train
from fer_core.transforms import BatchTransform

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml"

EPOCH_KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "lr", "seconds"}


def test_run_directory_has_every_file(smoke_run):
    run_dir, result = smoke_run
    assert result["state"] == "done"
    cfg = load_config(run_dir / "config.yaml")
    assert cfg == load_config(SMOKE)
    status = io.read_status(run_dir)
    assert status["state"] == "done" and status["epoch"] == status["epochs"] == 2 and status["pid"] > 0
    assert io.run_state(run_dir) == "done" and status["error"] is None
    metrics = io.read_metrics(run_dir)
    assert [m["epoch"] for m in metrics] == [1, 2] and all(EPOCH_KEYS <= set(m) for m in metrics)
    for name in ("best.safetensors", "last.safetensors", "last_state.pt"):
        assert (run_dir / "checkpoints" / name).stat().st_size > 0
    assert "epoch 2/2" in (run_dir / "log.txt").read_text()

    from fer_core.data import build_dataset

    subsets = build_dataset("synthfaces", split="test", **cfg.data.options).subsets
    evals = io.read_eval(run_dir)
    assert set(evals) == {"test/all", *(f"test/{s}" for s in subsets)}
    total = evals["test/all"]
    assert total["n"] == cfg.data.options["test_size"] and total["class_names"] == list(cfg_classes(cfg))
    assert np.asarray(total["confusion"]).shape == (7, 7) and np.asarray(total["confusion"]).sum() == total["n"]
    for key in ("accuracy", "mean_class_accuracy", "macro_f1"):
        assert 0.0 <= total[key] <= 1.0
    preds = io.read_predictions(run_dir, "test", "all")
    assert list(preds.columns[:5]) == ["index", "label", "pred", "correct", "confidence"]
    assert len(preds) == total["n"] and preds["correct"].mean() == pytest.approx(total["accuracy"])
    probs = preds[[f"prob_{c}" for c in total["class_names"]]].to_numpy()
    assert np.allclose(probs.sum(1), 1.0, atol=1e-3)
    events = {e["event"] for e in result["events"]}
    assert events == {"phase", "batch", "epoch", "eval", "done"}


def cfg_classes(cfg):
    from fer_core.labels import label_set

    return label_set(cfg.data.options.get("label_set", "basic7"))


def test_evaluate_run_reproduces_the_trainers_numbers(smoke_run, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(smoke_run[0], run_dir)
    before = io.read_eval(run_dir)["test/all"]
    after = evaluate_run(run_dir, "test", ["all"])["test/all"]
    assert after["accuracy"] == before["accuracy"] and after["confusion"] == before["confusion"]


def test_metrics_match_scikit_learn():
    from sklearn.metrics import confusion_matrix, f1_score

    rng = np.random.default_rng(0)
    labels, preds = rng.integers(0, 5, 200), rng.integers(0, 6, 200)  # class 6 absent, class 5 only predicted
    m = classification_metrics(labels, preds, 7)
    assert np.array_equal(m["confusion"], confusion_matrix(labels, preds, labels=range(7)))
    present = sorted(set(labels) | set(preds))
    assert m["macro_f1"] == pytest.approx(f1_score(labels, preds, labels=present, average="macro"))
    assert m["accuracy"] == pytest.approx((labels == preds).mean())
    recalls = [(preds[labels == c] == c).mean() for c in range(5)]
    assert m["mean_class_accuracy"] == pytest.approx(np.mean(recalls))
    assert m["per_class"]["recall"][6] is None and m["per_class"]["support"][6] == 0


def test_batch_transform_resizes_greys_normalises_and_augments():
    images = torch.randint(0, 256, (6, 3, 40, 40), dtype=torch.uint8)
    grey = BatchTransform(ModelConfig(name="g", input_size=(1, 20, 20), mean=(0.5,), std=(0.25,)))
    out = grey(images)
    assert out.shape == (6, 1, 20, 20) and out.dtype == torch.float32
    flat = torch.full((2, 3, 8, 8), 255, dtype=torch.uint8)
    assert torch.allclose(grey(flat), torch.full((2, 1, 20, 20), (1.0 - 0.5) / 0.25), atol=1e-4)
    aug = BatchTransform(ModelConfig(name="c", input_size=(3, 40, 40), mean=(0, 0, 0), std=(1, 1, 1)),
                         hflip=True, crop_padding=4)
    a = aug(images, torch.Generator().manual_seed(0))
    b = aug(images, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (6, 3, 40, 40) and not torch.equal(a, images.float() / 255)


@pytest.mark.slow
def test_short_run_learns_well_above_chance(tmp_path):
    # Balanced classes (chance = 1/7) and clear, frontal, unoccluded faces, so a few seconds of training show it.
    easy = ("data.options={image_size: 48, train_size: 800, val_size: 200, test_size: 200, balance: balanced, "
            "occlusion_rate: 0.0, profile_rate: 0.0, blend_rate: 0.0, min_intensity: 0.7}")
    cfg = load_config(SMOKE, [easy, "model.input_size=48", "train.epochs=6", "train.batch_size=16",
                              "train.augment.crop_padding=0", "eval.subsets=[all]"])
    result = train(cfg, tmp_path / "run")
    acc = result["results"]["test/all"]["accuracy"]
    assert acc > 2 / 7, f"test accuracy {acc:.3f} is not well above chance (1/7 = 0.143)"
    val = [m["val_acc"] for m in io.read_metrics(tmp_path / "run")]
    assert val[-1] > val[0] + 0.1, f"validation accuracy did not improve: {val}"


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    cfg = load_config(SMOKE, ["train.epochs=3"])
    train(cfg, tmp_path / "straight")

    def stop_after_epoch_2(event):
        if event["event"] == "epoch" and event["epoch"] == 2:
            raise KeyboardInterrupt  # as if the run were stopped right after its epoch-2 checkpoint

    stopped = tmp_path / "stopped"
    assert train(cfg, stopped, progress=stop_after_epoch_2)["state"] == "cancelled"
    assert io.read_status(stopped)["state"] == "cancelled" and len(io.read_metrics(stopped)) == 2
    assert train(load_config(stopped / "config.yaml"), stopped, resume=True)["state"] == "done"
    expected, resumed = io.read_metrics(tmp_path / "straight"), io.read_metrics(stopped)
    assert [m["epoch"] for m in resumed] == [1, 2, 3]
    for a, b in zip(expected, resumed, strict=True):  # same RNG, optimizer and schedule state: same numbers
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (a["epoch"], key)
    assert "resumed after epoch 2" in (stopped / "log.txt").read_text()
    assert io.read_eval(stopped)["test/all"]["n"] == cfg.data.options["test_size"]


def test_a_finished_run_resumed_with_more_epochs_trains_them(tmp_path):
    """``train --resume RUN --set train.epochs=N`` (and the app's resume with overrides) trains a finished run for
    longer; it used to evaluate again without training, its stage being past the end."""
    run = tmp_path / "run"
    assert train(load_config(SMOKE, ["train.epochs=2", "eval.subsets=[all]"]), run)["state"] == "done"
    longer = load_config(run / "config.yaml", ["train.epochs=3"])
    assert train(longer, run, resume=True)["state"] == "done"
    assert [m["epoch"] for m in io.read_metrics(run)] == [1, 2, 3]
    assert io.read_status(run)["epoch"] == 3
    assert "training 1 more epochs in stage" in (run / "log.txt").read_text()


def test_resume_restores_the_schedule_not_only_the_current_rate(tmp_path):
    """Stopped after epoch 1 of 3 and resumed: epoch 2 runs at the rate the optimiser's state carries, but epoch 3's
    rate comes from the scheduler, so a resume that restored the optimiser and not the scheduler shows here (the
    resume test above stops one epoch too late to see it). Rates, metrics and weights match the run that went
    through."""
    cfg = load_config(SMOKE, ["train.epochs=3", "train.scheduler={name: exponential, gamma: 0.5}",
                              "eval.subsets=[all]"])
    straight = tmp_path / "straight"
    train(cfg, straight)

    def stop_after_epoch_1(event):
        if event["event"] == "epoch" and event["epoch"] == 1:
            raise KeyboardInterrupt  # right after epoch 1's checkpoint

    stopped = tmp_path / "stopped"
    assert train(cfg, stopped, progress=stop_after_epoch_1)["state"] == "cancelled"
    assert [m["epoch"] for m in io.read_metrics(stopped)] == [1]
    assert train(load_config(stopped / "config.yaml"), stopped, resume=True)["state"] == "done"
    expected, resumed = io.read_metrics(straight), io.read_metrics(stopped)
    lr = cfg.train.optimizer.lr
    assert [m["lr"] for m in expected] == pytest.approx([lr, lr / 2, lr / 4], rel=1e-9)
    assert [m["lr"] for m in resumed] == pytest.approx([lr, lr / 2, lr / 4], rel=1e-9), "the schedule after resume"
    for a, b in zip(expected, resumed, strict=True):
        assert {k: v for k, v in a.items() if k != "seconds"} == \
            pytest.approx({k: v for k, v in b.items() if k != "seconds"}, rel=1e-5, abs=1e-7), a["epoch"]
    from safetensors.torch import load_file

    for name in ("last", "best"):
        want, got = load_file(straight / "checkpoints" / f"{name}.safetensors"), \
            load_file(stopped / "checkpoints" / f"{name}.safetensors")
        assert want.keys() == got.keys()
        for key in want:
            assert torch.allclose(want[key], got[key], rtol=1e-5, atol=1e-7), (name, key)


def test_failure_is_recorded_not_left_running(tmp_path):
    run_dir = tmp_path / "bad"
    with pytest.raises(ValueError, match="image_size"):
        train(load_config(SMOKE, ["data.options.image_size=5"]), run_dir)
    status = io.read_status(run_dir)
    assert status["state"] == "failed" and "image_size" in status["error"]
    assert io.run_state(run_dir) == "failed"
    assert "Traceback" in (run_dir / "log.txt").read_text()


def _cli(*args: str, runs: Path) -> subprocess.Popen:
    env = {**os.environ, "FER_RUNS_DIR": str(runs), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "fer_core", "train", "--quiet", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_sigkill_at_random_points_then_resume_gives_the_same_final_metrics(tmp_path):
    """A run killed with SIGKILL (no chance to clean up) at seeded random moments, then resumed with
    ``train --resume``, ends with exactly the metrics of a run that was never interrupted."""
    import random

    runs = tmp_path / "runs"
    common = ["--config", str(SMOKE), "--set", "train.epochs=4", "--set", "eval.subsets=[all]",
              "--set", "data.options={image_size: 32, train_size: 192, val_size: 48, test_size: 96}",
              "--set", "model.name=scn", "--set", "train.method={name: scn, relabel_epoch: 1}",
              "--set", "data.label_noise=0.2", "--set", "train.optimizer.sam.enabled=true"]
    straight = _cli(*common, "--run-id", "straight", runs=runs)
    assert straight.wait(timeout=300) == 0, straight.stderr.read()
    expected = io.read_metrics(runs / "straight")
    rng = random.Random(1234)
    for k in range(3):
        run = runs / f"killed{k}"
        epochs_before, extra = rng.randint(0, 3), rng.uniform(0.0, 0.6)   # where the kill lands
        proc = _cli(*common, "--run-id", run.name, runs=runs)
        deadline = time.monotonic() + 120
        while not ((run / "status.json").exists() and io.read_status(run).get("state") == "running"
                   and len(io.read_metrics(run)) >= epochs_before):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before the kill"
            time.sleep(0.02)
        time.sleep(extra)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert io.run_state(run) == "interrupted", io.read_status(run)
        resumed = _cli("--resume", run.name, runs=runs)
        assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
        got = io.read_metrics(run)
        assert [m["epoch"] for m in got] == [1, 2, 3, 4], (k, epochs_before, extra)
        for a, b in zip(expected, got, strict=True):
            for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "scn_relabelled"):
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (k, a["epoch"], key)
        assert io.read_eval(run)["test/all"]["accuracy"] == io.read_eval(runs / "straight")["test/all"]["accuracy"]


def test_non_finite_loss_fails_the_run_naming_epoch_and_batch(tmp_path):
    run_dir = tmp_path / "nan"
    cfg = load_config(SMOKE, ["train.optimizer={name: sgd, lr: 1.0e+30, momentum: 0.0}", "train.epochs=3"])
    with pytest.raises(FloatingPointError, match=r"loss is not finite at epoch \d+, batch \d+; lower train.optimizer"):
        train(cfg, run_dir)
    status = io.read_status(run_dir)
    assert status["state"] == "failed" and "FloatingPointError" in status["error"]
