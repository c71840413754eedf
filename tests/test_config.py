"""Configs: defaults, overrides, and errors that name the key, the value and what is valid."""

from __future__ import annotations

import pytest
import yaml

from fer_core.config import Config, ConfigError, apply_overrides, load_config


def _error(source=None, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(source, overrides)
    return str(info.value)


def test_defaults_and_overrides_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: t\nmodel: {name: resnet18, input_size: 112}\ntrain: {epochs: 2}\n")
    cfg = load_config(path, ["train.optimizer.lr=0.01", "train.optimizer.name=adamw", "data.options.train_size=64",
                             "train.augment.hflip=false", "eval.subsets=[all, occlusion]"])
    assert cfg.model.name == "resnet18" and cfg.model.input_size == 112
    assert cfg.train.optimizer.lr == 0.01 and cfg.train.optimizer.name == "adamw"
    assert cfg.data.options == {"train_size": 64} and cfg.train.augment.hflip is False
    assert cfg.eval.subsets == ["all", "occlusion"]
    again = load_config(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg
    assert load_config(None) == Config()


def test_overrides_do_not_touch_caller_dict():
    data = {"train": {"epochs": 3}}
    load_config(data, ["train.epochs=5"])
    assert data == {"train": {"epochs": 3}}


@pytest.mark.parametrize(("overrides", "expected"), [
    (["train.optimizer.lr=-0.1"], "train.optimizer.lr: must be > 0 (got -0.1)"),
    (["train.batch_size=0"], "train.batch_size: must be > 0 (got 0)"),
    (["train.epochs=abc"], "train.epochs: "),
    (["data.nmae=x"], "unknown key 'data.nmae' (valid: name, root, options, label_noise)"),
    (["train.optimizer.name=rmsprop"], "train.optimizer.name: must be one of 'sgd', 'adam' or 'adamw' (got 'rmsprop')"),
    (["model.name=vit_huge"], "model.name: unknown model 'vit_huge'; valid: "),
    (["train.device=tpu"], "train.device: must be cpu, cuda or cuda:N (got 'tpu')"),
    (["typo=1"], "unknown key 'typo' (valid: name, seed, group, tags, data, model, train, eval)"),
])
def test_errors_name_key_value_and_valid_choices(overrides, expected):
    assert expected in _error(None, overrides)


def test_unknown_model_lists_valid_names():
    message = _error(None, ["model.name=nope"])
    assert "small_cnn" in message and "resnet18" in message


def test_unknown_dataset_lists_valid_names():
    pytest.importorskip("fer_core.data")
    message = _error(None, ["data.name=imagenet"])
    assert "data.name: unknown data set 'imagenet'; valid: " in message and "synthfaces" in message


def test_several_problems_reported_together_with_file_name(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 0\n  optimizer: {lr: 0}\n")
    message = _error(path)
    assert str(path) in message and "train.epochs: must be > 0 (got 0)" in message
    assert "train.optimizer.lr: must be > 0 (got 0)" in message


def test_bad_override_syntax_and_sections():
    assert "--set expects key.sub=value" in _error(None, ["train.epochs"])
    assert "train.epochs is a value" in _error({"train": {"epochs": 3}}, ["train.epochs.x=1"])
    assert "train: must be a mapping" in _error({"train": 5})
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config([1, 2])  # type: ignore[arg-type]


def test_bad_yaml_and_missing_file(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("train: [unclosed\n")
    assert "not valid YAML" in _error(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_apply_overrides_parses_yaml_scalars():
    data: dict = {}
    apply_overrides(data, ["a.b=1", "a.c=0.5", "a.d=true", "a.e=null", "a.f=text", "a.g=[1, 2]", "a.h="])
    assert data == {"a": {"b": 1, "c": 0.5, "d": True, "e": None, "f": "text", "g": [1, 2], "h": None}}


def test_shipped_configs_are_valid():
    from pathlib import Path

    paths = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))
    assert {p.name for p in paths} >= {"synth_quick.yaml", "synth_resnet18.yaml", "smoke.yaml"}
    for path in paths:
        load_config(path)
