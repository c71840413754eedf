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
    (["data.nmae=x"], "unknown key 'data.nmae' (valid: name, root, options, label_noise, label_noise_mode, "
                      "shuffle_labels)"),
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
    import fer_core.data  # noqa: F401  (registers the data sets; a broken import fails, never skips)
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


# --------------------------------------------------------------------------------------------- one value parser
NOTATIONS = {
    "3": 3, "-3": -3, "+3": 3, "017": 17, "0x1F": 31, "0o17": 15,  # decimal (no YAML 1.1 octal), hex, octal
    "0.5": 0.5, "-0.5": -0.5, ".5": 0.5, "5.": 5.0, "1e-3": 0.001, "1E-3": 0.001, "1e3": 1000.0, "-2.5e-4": -0.00025,
    "+1.0e+2": 100.0, "1.0e-05": 1e-05,
    "true": True, "True": True, "FALSE": False, "null": None, "~": None, "": None, "  ": None,
    "[1, 2e-3, x]": [1, 0.002, "x"], "{a: 1e-3, b: [true]}": {"a": 0.001, "b": [True]},
    "adamw": "adamw", "yes": "yes", "no": "no", "on": "on", "off": "off",  # YAML 1.1 booleans stay text
    "1:30": "1:30", "2026-12-05": "2026-12-05", "1_000": "1_000", "'1e-3'": "1e-3", "[unclosed": "[unclosed",
}


def test_parse_value_reads_every_number_notation_booleans_null_and_lists():
    from fer_core.config import parse_value

    for text, expected in NOTATIONS.items():
        got = parse_value(text)
        assert got == expected and type(got) is type(expected), (text, got)
    import math

    assert math.isinf(parse_value(".inf")) and parse_value("-.inf") < 0 and math.isnan(parse_value(".nan"))


def test_set_grid_variant_and_config_files_read_a_value_alike(tmp_path):
    """``--set``, a sweep's ``--grid`` and ``--variant``, and a YAML file give the same value for the same text,
    also inside free-form option dicts where no schema converts it (``1e-3`` was a string under YAML 1.1)."""
    from fer_core.sweep import parse_grid, parse_variant

    for text, expected in NOTATIONS.items():
        if "," in text or text.strip() == "" or text.startswith("{"):
            continue  # a grid splits values at commas; an empty grid value is refused
        data: dict = {}
        apply_overrides(data, [f"model.options.x={text}"])
        assert data["model"]["options"]["x"] == expected, text
        if ":" not in text:  # a grid reads start:stop as a range
            assert parse_grid([f"model.options.x={text}"])["model.options.x"] == [expected], text
        assert parse_variant(f"v:model.options.x={text}")[1]["model.options.x"] == expected, text
    cfg = load_config({"model": {"name": "small_cnn"}}, ["model.options.drop_rate=1e-3"])
    assert cfg.model.options["drop_rate"] == 0.001
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: small_cnn\n  options: {drop_rate: 1e-3}\ntrain:\n  optimizer: {lr: 3e-4}\n")
    loaded = load_config(path)
    assert loaded.model.options["drop_rate"] == 0.001 and loaded.train.optimizer.lr == 0.0003


def test_config_yaml_round_trips_values_that_look_like_other_types(tmp_path):
    """What a run writes in config.yaml reads back identical, here and with any YAML 1.1 reader (``'yes'`` and
    ``'1e-3'`` as text stay text)."""
    tricky = {"a": "yes", "b": "1e-3", "c": "017", "d": "1:30", "e": "2026-12-05", "f": "null", "g": 1e-5, "h": "on"}
    cfg = load_config({"data": {"options": tricky}, "model": {"options": {"note": "true"}}})
    text = cfg.to_yaml()
    assert load_config(yaml.safe_load(text)) == cfg  # PyYAML's own (YAML 1.1) reader
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert load_config(path) == cfg
