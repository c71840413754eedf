"""The real data sets through the whole engine: a tiny run on each published-format fixture trains, and its
evaluation covers the test split and RAN's challenge subsets found in ``<root>/subsets/``, with the data set's
folder taken from ``$FER_DATA``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from test_data_affectnet import TEST_ROWS, _stem, aff_root  # noqa: F401  (fixture)
from test_data_ckplus import _write_ck
from test_data_rafdb import raf_root  # noqa: F401  (fixture)

from fer_core import io
from fer_core.config import load_config
from fer_core.train import train

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml"
OVERRIDES = ("model.input_size=32", "train.epochs=1", "train.batch_size=8", "data.options={}")


def _train(run_dir, name, options=()):
    cfg = load_config(SMOKE, (*OVERRIDES, f"data.name={name}", *options))
    result = train(cfg, run_dir)
    assert result["state"] == "done", io.read_status(run_dir)
    return io.read_eval(run_dir), load_config(run_dir / "config.yaml")


def test_affectnet_run_with_subsets_from_fer_data(aff_root, tmp_path, monkeypatch):  # noqa: F811
    home = tmp_path / "data"
    home.mkdir()
    shutil.move(aff_root, home / "affectnet")
    (home / "affectnet" / "subsets").mkdir()
    # two 7-class test faces; a contempt face (dropped by the 7-class protocol) is reported, not matched
    kept = [g for g, c in TEST_ROWS if c <= 6][:2]
    contempt = next(g for g, c in TEST_ROWS if c == 7)
    (home / "affectnet" / "subsets" / "occlusion.txt").write_text(
        "".join(f"{_stem(g)} 0 1\n" for g in [*kept, contempt]))
    monkeypatch.setenv("FER_DATA", str(home))
    results, saved = _train(tmp_path / "run", "affectnet", ["data.options.image_size=40"])
    assert saved.data.root == str(home / "affectnet")  # the run records the folder it read
    assert set(results) == {"test/all", "test/occlusion"}
    assert results["test/all"]["n"] == sum(c <= 6 for _, c in TEST_ROWS)
    assert results["test/occlusion"]["n"] == 2
    assert results["test/all"]["class_names"][:7] == ["neutral", "happy", "sad", "surprise", "fear", "disgust",
                                                      "anger"]


def test_ckplus_fold_run(tmp_path):
    root = _write_ck(tmp_path / "CK+")
    results, saved = _train(tmp_path / "run", "ckplus", [f"data.root={root}", "data.options.fold=2",
                                                        "data.options.crop_face=false", "data.options.image_size=32"])
    assert set(results) == {"test/all"} and saved.data.options["fold"] == 2
    assert len(results["test/all"]["class_names"]) == 8 and results["test/all"]["n"] > 0


def test_real_data_set_without_a_folder_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.delenv("FER_DATA", raising=False)
    with pytest.raises(ValueError, match="reads files from disk.*FER_DATA"):
        train(load_config(SMOKE, (*OVERRIDES, "data.name=rafdb")), tmp_path / "run")
    assert io.read_status(tmp_path / "run")["state"] == "failed"


def test_unknown_data_set_options_are_refused_before_a_run_exists(tmp_path, monkeypatch):
    from fer_core.cli import main
    from fer_core.data import dataset_info
    from fer_core.lifecycle import check_launch

    monkeypatch.setenv("FER_DATA", str(tmp_path))
    (tmp_path / "rafdb").mkdir()
    cfg = load_config(SMOKE, (*OVERRIDES, "data.name=rafdb", "data.options={colour: true, seed: 1}"))
    assert check_launch(cfg) == ["data.options: unknown option(s) colour for rafdb; valid: "
                                 + ", ".join(dataset_info("rafdb").options)]
    runs = tmp_path / "runs"
    assert main(["train", "--config", str(SMOKE), "--runs-dir", str(runs), "--set", "data.name=rafdb",
                 "--set", "data.options={colour: true}"]) == 2
    assert not runs.exists() or not any(runs.iterdir())  # nothing created


@pytest.mark.parametrize("name", ["synthfaces", "rafdb"])
def test_subsets_picked_from_the_loaded_split_equal_subsets_loaded_alone(name, raf_root, tmp_path,  # noqa: F811
                                                                          monkeypatch):
    from fer_core.evaluate import _subset_of
    from fer_core.runs import load_split

    root, lists = raf_root
    sets = [f"data.name={name}"] + ([f"data.root={root}", "data.options.image_size=32",
                                     f"data.options.occlusion_list={lists / 'occlusion.txt'}",
                                     f"data.options.pose30_list={lists / 'pose30.txt'}"] if name == "rafdb" else [])
    cfg = load_config(SMOKE, (*OVERRIDES, *sets))
    ds, images, labels = load_split(cfg.data, "test")
    assert ds.subsets
    for subset in ds.subsets:
        picked = _subset_of(cfg, "test", subset, images, labels, {})
        _, alone, alone_labels = load_split(cfg.data, "test", subset)
        assert torch.equal(picked[0], alone) and torch.equal(picked[1], alone_labels) and len(alone) > 0
