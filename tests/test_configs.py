"""Every config in configs/ validates, and every SynthFACS recipe trains (cut to one tiny epoch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fer_core.config import load_config
from fer_core.train import train

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
ALL = sorted(CONFIGS.rglob("*.yaml"))
SYNTH = sorted((CONFIGS / "synth").glob("*.yaml"))


@pytest.mark.parametrize("path", ALL, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_validates(path):
    cfg = load_config(path)
    assert cfg.name and cfg.train.total_epochs > 0
    first = path.read_text(encoding="utf-8").lstrip()
    assert first.startswith("#"), f"{path.name} should start with a comment saying what it is"


def test_recipes_follow_the_papers():
    scn = load_config(CONFIGS / "recipes" / "scn_rafdb.yaml", ["data.name=synthfaces"])
    assert scn.train.method.name == "scn" and scn.train.method.relabel_epoch == 9   # the authors' 10th, from 1
    assert (scn.train.method.loss, scn.train.method.relabel_scope) == ("paper", "low")
    assert scn.train.optimizer.name == "adam" and scn.train.scheduler.gamma == 0.9 and scn.train.epochs == 70
    patt = load_config(CONFIGS / "recipes" / "patt_lite_rafdb.yaml", ["data.name=synthfaces"])
    head, finetune = patt.train.resolved_stages()
    assert head.freeze == "backbone" and head.early_stopping.patience == 5 and patt.train.grad_clip_norm == 3
    assert finetune.freeze_bn and finetune.optimizer.lr == 1e-5 and finetune.scheduler.name == "inverse_time"
    assert patt.train.batch_size == 8 and patt.train.class_weights == "balanced"
    assert head.freeze_bn and patt.model.input_size == 224                   # BatchNorm in inference mode throughout
    assert (finetune.scheduler.decay_rate, finetune.scheduler.decay_epochs) == (1.0, 80)   # lr / (1 + epoch / 80)
    synth = load_config(CONFIGS / "synth" / "patt_lite.yaml").train.resolved_stages()[-1]
    assert (synth.scheduler.decay_rate, synth.scheduler.decay_epochs) == (1.0, 80)


@pytest.mark.parametrize("path", SYNTH, ids=lambda p: p.name)
def test_synthfaces_recipe_trains(path, tmp_path):
    tiny = ["data.options.train_size=64", "data.options.val_size=32", "data.options.test_size=32",
            "eval.subsets=[all]"]
    raw = load_config(path, tiny).to_dict()
    raw["train"]["epochs"] = 1
    for stage in raw["train"]["stages"] or []:
        stage["epochs"] = 1
    cfg = load_config(raw)
    result = train(cfg, tmp_path / path.stem)
    assert result["state"] == "done" and result["results"]["test/all"]["n"] == 32
