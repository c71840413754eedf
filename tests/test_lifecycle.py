"""The run lifecycle's one owner (fer_core.lifecycle): the app's launcher and the ``train`` command create run
folders the same way, and the pre-flight check builds the model once, with the data set's own classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from fer_core import io, lifecycle, runs
from fer_core.config import load_config

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs" / "smoke.yaml"
TWO_STAGES = ["train.stages=[{name: head, epochs: 1}, {name: finetune, epochs: 2}]"]


def test_app_and_command_line_queue_a_multi_stage_run_alike(runs_root, monkeypatch):
    """A run queued by the app (launch_train) and one the ``train`` command opens say the same epoch count before
    training starts: every stage's epochs (they once said ``train.epochs`` and ``total_epochs``)."""
    started = []
    monkeypatch.setattr(lifecycle, "_start", lambda run_dir, args: started.append(args) or 4242)
    run_id, pid = lifecycle.launch_train(SMOKE, TWO_STAGES)
    assert pid == 4242 and started[0][:2] == ["train", "--config"]
    cfg = load_config(SMOKE, TWO_STAGES)
    by_command = lifecycle.open_run(cfg, root=runs_root)
    app, command = io.read_status(runs_root / run_id), io.read_status(by_command)
    assert app["state"] == command["state"] == "queued"
    assert app["epochs"] == command["epochs"] == cfg.train.total_epochs == 3
    assert (runs_root / run_id / "config.yaml").read_text() == (by_command / "config.yaml").read_text()


def test_a_launched_folder_is_claimed_once_and_a_taken_one_refused(runs_root, monkeypatch):
    monkeypatch.setattr(lifecycle, "_start", lambda run_dir, args: 4242)
    cfg = load_config(SMOKE)
    run_id, _ = lifecycle.launch_train(cfg)
    io.write_status(runs_root / run_id, pid=None)  # as if the child had not written its pid yet
    assert lifecycle.open_run(cfg, run_id, runs_root) == runs_root / run_id  # the trainer claims it
    io.write_status(runs_root / run_id, pid=1)  # another process (pid 1) is its trainer
    with pytest.raises(lifecycle.RunFolderError, match="already exists"):
        lifecycle.open_run(cfg, run_id, runs_root)


def test_pre_flight_check_builds_the_model_once_with_the_data_sets_classes(monkeypatch):
    built = []
    real = runs.model_from_config

    def counting(cfg, class_names):
        built.append(len(class_names))
        return real(cfg, class_names)

    monkeypatch.setattr(runs, "model_from_config", counting)
    eight = ["data.options.label_set=basic8", "train.method.name=scn"]
    assert lifecycle.check_launch(load_config(SMOKE, [*eight, "model.name=scn"])) == []
    assert built == [8]  # once, with SynthFACS's eight classes of that label set (no longer a fixed 7)
    built.clear()
    problems = lifecycle.check_launch(load_config(SMOKE, eight))
    assert built == [8]
    assert problems == ["train.method: scn needs a model with importance weights (model.name: scn); "
                        "model.name is small_cnn"]


def test_a_sweep_refuses_a_point_whose_model_the_method_cannot_use():
    """The sweep's plan and the launch check share one model check, so a sweep no longer starts runs that fail."""
    from fer_core.config import ConfigError
    from fer_core.sweep import parse_variant, plan_sweep

    with pytest.raises(ConfigError, match="point variant=plain model.name=small_cnn: train.method: scn needs"):
        plan_sweep(load_config(SMOKE, ["model.name=scn", "train.method.name=scn"]),
                   variants=[parse_variant("scn:"), parse_variant("plain:model.name=small_cnn")])
