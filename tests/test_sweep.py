"""Sweeps and ablations: grid and variant parsing, planning and validation, groups and tags in the run folders,
``runs --group``, and one real two-run sweep through ``python -m fer_core sweep``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from fer_core import io, lifecycle
from fer_core.cli import main
from fer_core.config import ConfigError, load_config
from fer_core.lifecycle import run_sweep
from fer_core.sweep import expand_grid, parse_grid, parse_range, parse_variant, plan_sweep

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs" / "smoke.yaml"
# configs/smoke.yaml cut down further: one epoch on a few dozen images, evaluated on the whole test split only.
TINY = ["train.epochs=1", "data.options.train_size=64", "data.options.val_size=32", "data.options.test_size=32",
        "eval.subsets=[all]"]


@pytest.fixture
def base():
    return load_config(SMOKE)


@pytest.fixture
def no_launch(monkeypatch):
    """Fail the test if anything is started."""

    def refuse(*args, **kwargs):
        raise AssertionError("launch_train called")

    monkeypatch.setattr(lifecycle, "launch_train", refuse)


# --------------------------------------------------------------------------------------------- parsing
def test_parse_grid_reads_values_as_yaml_scalars():
    grid = parse_grid(["train.optimizer.lr=0.1,1e-3,2", "train.augment.hflip=true,false",
                       "model.name=small_cnn,resnet18", "eval.splits=[val, test],[test]", "data.root=null,'a,b'"])
    assert grid == {"train.optimizer.lr": [0.1, 0.001, 2], "train.augment.hflip": [True, False],
                    "model.name": ["small_cnn", "resnet18"], "eval.splits": [["val", "test"], ["test"]],
                    "data.root": [None, "a,b"]}
    assert isinstance(grid["train.optimizer.lr"][1], float)  # YAML 1.1 alone would leave "1e-3" a string


def test_ranges_are_exact_and_include_the_stop():
    assert parse_range("0.1:1.0:0.1") == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]  # not 0.30000000000000004
    assert parse_range("0:4") == [0, 1, 2, 3, 4] and all(type(v) is int for v in parse_range("0:4"))
    assert parse_range("1:0:-0.25") == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert parse_range("0:1:0.3") == [0.0, 0.3, 0.6, 0.9]  # a stop off the step is not reached
    assert parse_range("resnet18") is None and parse_range("0.1") is None
    assert parse_grid(["seed=0:2,10", "train.optimizer.lr=1e-3:3e-3:1e-3"]) == {
        "seed": [0, 1, 2, 10], "train.optimizer.lr": [0.001, 0.002, 0.003]}
    for bad, message in (("0:1:0", "must not be 0"), ("1:0", "never goes from 1 to 0"), ("0:1e9", "at most 1000")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_grid([f"seed={bad}"])


def test_parse_grid_errors():
    with pytest.raises(ConfigError, match="--grid expects key.sub=v1,v2"):
        parse_grid(["train.optimizer.lr"])
    with pytest.raises(ConfigError, match="given twice"):
        parse_grid(["seed=1", "seed=2"])


def test_parse_variant():
    assert parse_variant("full:") == ("full", {})
    assert parse_variant("no_regions:model.options.regions=false,train.optimizer.lr=1e-3,eval.splits=[val, test]") == (
        "no_regions", {"model.options.regions": False, "train.optimizer.lr": 0.001, "eval.splits": ["val", "test"]})
    for bad in ("no_colon", ":model.options.regions=false", "a b:seed=1", "x:seed"):
        with pytest.raises(ConfigError, match="--variant"):
            parse_variant(bad)


# --------------------------------------------------------------------------------------------- planning
def test_expand_grid_is_the_product_with_tags_group_and_names(base):
    grid = {"train.optimizer.lr": [0.1, 0.01], "train.augment.crop_padding": [0, 2, 4]}
    points = expand_grid(base, grid, group="lr-pad")
    assert len(points) == 6
    assert [tags for tags, _ in points] == [{"train.optimizer.lr": lr, "train.augment.crop_padding": pad}
                                             for lr in (0.1, 0.01) for pad in (0, 2, 4)]
    for tags, cfg in points:
        assert cfg.group == "lr-pad" and cfg.tags == tags
        assert cfg.train.optimizer.lr == tags["train.optimizer.lr"]
        assert cfg.train.augment.crop_padding == tags["train.augment.crop_padding"]
        assert cfg.train.epochs == base.train.epochs  # the rest comes from the base
    assert [cfg.name for _, cfg in points][:2] == ["smoke-lr0.1-crop_padding0", "smoke-lr0.1-crop_padding2"]
    assert len({cfg.name for _, cfg in points}) == 6
    default = expand_grid(base, {"seed": [0, 1]})
    assert re.fullmatch(r"smoke-sweep-\d{8}-\d{6}", default[0][1].group) and default[1][1].group == default[0][1].group


def test_clashing_last_key_parts_use_the_whole_key(base):
    points = expand_grid(base, {"train.optimizer.name": ["adam"], "model.name": ["small_cnn"]})
    assert points[0][1].name == "smoke-train_optimizer_name" "adam-model_name" "small_cnn"


def test_every_point_is_validated_before_anything_runs(base, runs_root, no_launch):
    # the first point is fine; the others are not: nothing may start, and each problem names its key and value
    grid = {"train.optimizer.lr": [0.01, -0.1], "train.epochs": [1, 0]}
    with pytest.raises(ConfigError) as info:
        run_sweep(base, grid, runs_root=runs_root)
    text = str(info.value)
    assert "point train.optimizer.lr=-0.1 train.epochs=1: train.optimizer.lr: must be > 0 (got -0.1)" in text
    assert "point train.optimizer.lr=0.01 train.epochs=0: train.epochs: must be > 0 (got 0)" in text
    assert "train.optimizer.lr=0.01 train.epochs=1:" not in text
    assert list(runs_root.iterdir()) == []
    with pytest.raises(ConfigError, match=r"point train.optimizer.lrr=0.1: unknown key 'train.optimizer.lrr' "
                                          r"\(valid: name, lr,"):
        expand_grid(base, {"train.optimizer.lrr": [0.1]})
    with pytest.raises(ConfigError, match="point seed.x=1: seed.x: seed is a value"):
        expand_grid(base, {"seed.x": [1]})
    with pytest.raises(ConfigError, match="non-empty list"):
        expand_grid(base, {"seed": []})


def test_model_options_are_checked_by_building_on_the_meta_device(no_launch):
    base = load_config({"model": {"name": "region_attention"}})
    variants = [parse_variant("full:"), parse_variant("typo:model.options.regoins=false"),
                parse_variant("bad:model.options.regions=false,model.options.fusion=two_branch")]
    with pytest.raises(ConfigError) as info:
        plan_sweep(base, variants=variants)
    text = str(info.value)
    assert "point variant=typo model.options.regoins=false:" in text and "'regoins'" in text
    assert "point variant=bad model.options.regions=false model.options.fusion=two_branch:" in text
    assert "needs regions=True" in text and "variant=full" not in text


def test_variants_crossed_with_a_grid(base):
    variants = [parse_variant("full:"), parse_variant("no_flip:train.augment.hflip=false,train.optimizer.lr=0.5")]
    points = plan_sweep(base, {"train.optimizer.lr": [0.1, 0.01]}, variants=variants, group="abl")
    assert [cfg.name for _, cfg in points] == ["smoke-full-lr0.1", "smoke-full-lr0.01", "smoke-no_flip-lr0.1",
                                               "smoke-no_flip-lr0.01"]
    tags, cfg = points[2]
    assert tags == {"variant": "no_flip", "train.augment.hflip": False, "train.optimizer.lr": 0.1}
    assert cfg.tags == tags and cfg.group == "abl"
    assert cfg.train.augment.hflip is False and cfg.train.optimizer.lr == 0.1  # the grid value wins over the variant
    assert points[0][1].train.augment.hflip is True and points[0][0] == {"variant": "full", "train.optimizer.lr": 0.1}
    only = plan_sweep(base, variants=variants)
    assert [t for t, _ in only] == [{"variant": "full"}, {"variant": "no_flip", "train.augment.hflip": False,
                                                          "train.optimizer.lr": 0.5}]
    with pytest.raises(ConfigError, match="unique"):
        plan_sweep(base, variants=[("a", {}), ("a", {"seed": 1})])
    with pytest.raises(ConfigError, match="nothing to sweep"):
        plan_sweep(base)


def test_base_tags_and_group_are_kept():
    base = load_config({"name": "ran", "group": "paper-table-3", "tags": {"paper": "RAN"}})
    (tags, cfg), = expand_grid(base, {"seed": [3]})
    assert cfg.group == "paper-table-3" and cfg.tags == {"paper": "RAN", "seed": 3} and tags == {"seed": 3}
    assert expand_grid(base, {"seed": [3]}, group="mine")[0][1].group == "mine"


# --------------------------------------------------------------------------------------------- CLI without training
def test_cli_dry_run_prints_the_plan_and_starts_nothing(runs_root, capsys, no_launch):
    assert main(["sweep", "--config", str(SMOKE), "--grid", "train.optimizer.lr=0.1,0.01", "--variant", "full:",
                 "--variant", "no_flip:train.augment.hflip=false", "--group", "g", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"sweep g: 4 runs, 1 at a time, into {runs_root}")
    assert "smoke-no_flip-lr0.01  variant=no_flip train.augment.hflip=false train.optimizer.lr=0.01" in out
    assert list(runs_root.iterdir()) == []


def test_cli_errors_exit_2_and_start_nothing(runs_root, capsys, no_launch):
    assert main(["sweep", "--config", str(SMOKE)]) == 2
    assert "sweep needs --grid" in capsys.readouterr().err
    assert main(["sweep", "--config", str(SMOKE), "--grid", "train.optimizer.lr=0.1,-1"]) == 2
    assert "point train.optimizer.lr=-1: train.optimizer.lr: must be > 0 (got -1)" in capsys.readouterr().err
    assert main(["sweep", "--config", str(SMOKE), "--grid", "seed=1", "--parallel", "0"]) == 2
    assert list(runs_root.iterdir()) == []


def _fake_run(root: Path, run_id: str, group: str | None, tags: dict) -> None:
    cfg = load_config(SMOKE).model_copy(update={"group": group, "tags": tags})
    run_dir = io.create_run_dir(run_id, root)
    io.atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    io.write_status(run_dir, state="done", epoch=2, epochs=2)


def test_runs_group_filters(runs_root, capsys):
    _fake_run(runs_root, "a1", "ga", {"seed": 1})
    _fake_run(runs_root, "a2", "ga", {"seed": 2})
    _fake_run(runs_root, "b1", "gb", {})
    _fake_run(runs_root, "plain", None, {})
    assert {r["run_id"]: (r["group"], r["tags"]) for r in io.list_runs()} == {
        "a1": ("ga", {"seed": 1}), "a2": ("ga", {"seed": 2}), "b1": ("gb", {}), "plain": (None, {})}
    assert sorted(r["run_id"] for r in io.list_runs(group="ga")) == ["a1", "a2"]
    assert main(["runs", "--group", "ga"]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]]
    assert sorted(rows) == ["a1", "a2"]
    assert main(["runs", "--group", "gb", "--json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)["runs"]] == ["b1"]
    assert main(["runs", "--group", "nope"]) == 0
    assert "no runs of group nope" in capsys.readouterr().out


def test_an_interrupted_sweep_cancels_the_runs_it_started(base, runs_root):
    def stop(event):
        if event["event"] == "start":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(base, {"seed": [0, 1]}, runs_root=runs_root, group="stopped", progress=stop)
    (run_dir,) = runs_root.iterdir()  # the second point never started
    assert io.run_state(run_dir) == "cancelled"


# --------------------------------------------------------------------------------------------- a real sweep
@pytest.mark.slow
def test_a_real_two_run_sweep_end_to_end(runs_root, capsys):
    args = ["sweep", "--config", str(SMOKE), *[x for s in TINY for x in ("--set", s)],
            "--grid", "train.optimizer.lr=0.003,0.001", "--group", "e2e", "--parallel", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "run 1/2 started" in out and "run 2/2 done" in out and "\ngroup e2e:\n" in out
    table = out.split("\ngroup e2e:\n", 1)[1].splitlines()
    assert table[0].split() == ["run_id", "state", "train.optimizer.lr", "val_acc", "test_acc"]
    assert {tuple(line.split()[1:3]) for line in table[2:]} == {("done", "0.003"), ("done", "0.001")}
    runs = io.list_runs(group="e2e")
    assert len(runs) == 2 and all(r["state"] == "done" and r["test_acc"] is not None for r in runs)
    for r in runs:
        saved = yaml.safe_load((Path(r["path"]) / "config.yaml").read_text())
        assert saved["group"] == "e2e" and saved["tags"] == {"train.optimizer.lr": saved["train"]["optimizer"]["lr"]}
        assert saved["name"] == f"smoke-lr{saved['train']['optimizer']['lr']:g}" and saved["train"]["epochs"] == 1
