"""Accuracy per bin of SynthFACS's factors (fer_core.factors): hand-made faces and correctness give hand-computed bins
and Wilson intervals; evaluation of a SynthFACS run writes the factor files, whose bins add up to the split; the
Run and Compare pages draw them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from apphelpers import app, array, charts_on, copy_run, texts

from fer_core import io
from fer_core.data.synthfaces.dataset import SampleMeta, make_identity
from fer_core.data.synthfaces.render import FaceSpec, Nuisance
from fer_core.factors import FACTORS, accuracy_by_factor, factor_values, factors_paths, read_factors, write_factors


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval written out (Wilson 1927), to check the library's."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def _meta(yaw: float = 0.0, occluder: str = "none", au: float = 0.0, intensity: float = 0.5,
          light: tuple[float, float, float] = (0.0, 0.0, 1.0), blur: float = 0.0, jpeg: int = 0) -> SampleMeta:
    vector = np.zeros(19, np.float32)
    vector[8] = au  # AU 12
    spec = FaceSpec(identity=make_identity(0, 0), au=vector, yaw=yaw, occluder=occluder,
                    nuisance=Nuisance(light=light, blur=blur, jpeg=jpeg))
    return SampleMeta(spec=spec, subject=0, label=0, clean_label=0, label_dist=np.ones(7, np.float32) / 7,
                      intensity=intensity, blend=None)


def test_factor_values_of_hand_made_faces():
    metas = [_meta(yaw=-50, occluder="mask", au=0.6, intensity=0.62, light=(1.0, 0.0, 1.0), blur=0.5, jpeg=80),
             _meta(yaw=20, au=0.0, intensity=0.9, light=(0.0, 0.0, 1.0))]
    values = factor_values(metas)
    assert list(values.columns) == list(FACTORS)
    assert values.loc[0, "yaw"] == -50 and values.loc[0, "occluder"] == "mask"
    assert values.loc[0, "intensity"] == pytest.approx(0.62)
    assert values.loc[1, "intensity"] is None  # a neutral face moves no action unit: its intensity is never shown
    assert values.loc[0, "light"] == pytest.approx(45.0) and values.loc[1, "light"] == pytest.approx(0.0)
    assert values.loc[0, "blur"] == 0.5 and values.loc[0, "jpeg"] == 80 and values.loc[1, "jpeg"] == 0


def test_accuracy_per_bin_matches_hand_computed_values():
    values = pd.DataFrame({
        "yaw": [-50.0, -10.0, 0.0, 14.9, 15.0, 60.0, 75.0],  # 75: beyond the range, into the outer bin
        "occluder": ["none", "mask", "mask", "none", "hand", "none", "mask"],
        "intensity": [0.35, None, 0.95, 1.0, None, 0.2, 0.41],
        "blur": [0.0, 0.0, 0.3, 0.5, 1.0, 0.0, 0.21],
    })
    correct = np.array([True, False, True, True, False, True, False])
    table = accuracy_by_factor(values, correct)

    yaw = {b["bin"]: b for b in table["yaw"]["bins"]}
    assert [b["n"] for b in table["yaw"]["bins"]] == [1, 0, 0, 1, 2, 1, 0, 2]
    assert yaw["-15 to 0"]["accuracy"] == 0.0 and yaw["0 to 15"]["accuracy"] == 1.0  # 0 and 14.9
    assert yaw["15 to 30"]["n"] == 1 and yaw["15 to 30"]["accuracy"] == 0.0  # 15 opens the next bin
    assert yaw["45 to 60"]["correct"] == 1 and yaw["45 to 60"]["accuracy"] == 0.5  # 60 (closed end) and 75
    assert yaw["-45 to -30"]["accuracy"] is None and yaw["-45 to -30"]["ci_low"] is None
    for b in table["yaw"]["bins"]:
        if b["n"]:
            assert (b["ci_low"], b["ci_high"]) == pytest.approx(_wilson(b["correct"], b["n"]), abs=1e-9)

    occ = {b["bin"]: (b["n"], b["correct"]) for b in table["occluder"]["bins"]}
    assert occ == {"none": (3, 3), "sunglasses": (0, 0), "mask": (3, 1), "hand": (1, 0), "hat": (0, 0),
                   "fringe": (0, 0), "block": (0, 0)}
    assert table["occluder"]["numeric"] is False

    intensity = {b["bin"]: (b["n"], b["correct"]) for b in table["intensity"]["bins"] if b["n"]}
    assert intensity == {"0 to 0.3": (1, 1), "0.3 to 0.4": (1, 1), "0.4 to 0.5": (1, 0), "0.9 to 1": (2, 2)}
    assert table["intensity"]["not_applicable"] == {"n": 2, "correct": 0, "accuracy": 0.0}

    blur = {b["bin"]: (b["n"], b["correct"]) for b in table["blur"]["bins"] if b["n"]}
    assert blur == {"none": (3, 2), "0.2 to 0.4": (2, 1), "0.4 to 0.6": (1, 1), "0.8 to 1": (1, 0)}
    for part in table.values():  # every face in exactly one bin or not applicable
        assert sum(b["n"] for b in part["bins"]) + part["not_applicable"]["n"] == len(correct)

    with pytest.raises(ValueError, match="unknown factor 'colour'; valid: yaw, pitch"):
        accuracy_by_factor(pd.DataFrame({"colour": [1.0]}), [True])
    with pytest.raises(ValueError, match="7 faces have factor values but 2"):
        accuracy_by_factor(values, [True, False])


def test_evaluation_of_a_synthfaces_run_writes_the_factors(finished_run: Path):
    evals = io.read_eval(finished_run)
    assert all("/" in key and not key.endswith("factors") for key in evals)  # not read as a subset
    result = read_factors(finished_run, "test")
    n = evals["test/all"]["n"]
    assert result["split"] == "test" and result["n"] == n
    assert result["accuracy"] == pytest.approx(evals["test/all"]["accuracy"])
    for name, part in result["factors"].items():
        counted = sum(b["n"] for b in part["bins"]) + part["not_applicable"]["n"]
        right = sum(b["correct"] for b in part["bins"]) + part["not_applicable"]["correct"]
        assert counted == n, name
        assert right == round(evals["test/all"]["accuracy"] * n), name
    values = pd.read_csv(factors_paths(finished_run, "test")[1])
    predictions = io.read_predictions(finished_run, "test", "all")
    assert values["pred"].tolist() == predictions["pred"].tolist()
    assert values["correct"].tolist() == predictions["correct"].tolist()
    assert set(FACTORS) <= set(values.columns)


def test_other_data_sets_get_no_factor_file(tmp_path: Path):
    import torch
    from torch.utils.data import TensorDataset

    ds = TensorDataset(torch.zeros(3, 3, 8, 8, dtype=torch.uint8))
    assert write_factors(tmp_path, "test", ds, torch.tensor([0, 1, 2]), torch.zeros(3, 7)) is None
    assert not (tmp_path / "eval").exists() and read_factors(tmp_path, "test") is None


def test_cli_factors_prints_the_bins(finished_run: Path, capsys: pytest.CaptureFixture):
    from fer_core.cli import main

    assert main(["factors", str(finished_run), "--factor", "occluder"]) == 0
    out = capsys.readouterr().out
    assert "occluder: what covers part of the face" in out and "sunglasses" in out and "yaw" not in out
    assert main(["factors", str(finished_run), "--factor", "hue"]) == 1
    assert "unknown factor 'hue'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- app
def test_run_page_shows_robustness_per_factor(runs_root: Path, finished_run: Path):
    copy_run(finished_run, runs_root, finished_run.name)
    at = app("../pages/run.py", run=finished_run.name)
    assert texts(at.subheader)[-2:] == ["Robustness", "Probe"]
    result = read_factors(finished_run, "test")
    figures = charts_on(at)
    yaw, intensity, occluder, other = figures[-4:]
    assert intensity["layout"]["xaxis"]["title"]["text"] == "expression intensity"
    shown = [b for b in result["factors"]["yaw"]["bins"] if b["n"]]
    assert array(yaw["data"][0]["y"]) == pytest.approx([100 * b["accuracy"] for b in shown])
    assert occluder["data"][0]["type"] == "bar"
    assert other["layout"]["xaxis"]["title"]["text"] == FACTORS["pitch"].title
    at.selectbox(key="run.factor").select("light").run()
    assert not at.exception
    assert charts_on(at)[-1]["layout"]["xaxis"]["title"]["text"] == FACTORS["light"].title


def test_run_page_without_factor_file_says_how_to_get_it(runs_root: Path, finished_run: Path):
    run = copy_run(finished_run, runs_root, finished_run.name)
    factors_paths(run, "test")[0].unlink()
    at = app("../pages/run.py", run=run.name)
    assert any(f"python -m fer_core evaluate {run.name}" in i.value for i in at.info)


def test_compare_page_plots_factors_of_every_run(runs_root: Path, finished_run: Path):
    a = copy_run(finished_run, runs_root, "20260101-100000-a-0001")
    b = copy_run(finished_run, runs_root, "20260101-110000-b-0002")
    config = io.read_config(b)
    config["train"]["optimizer"]["lr"] = 0.01
    io.atomic_write_text(b / "config.yaml", io.dump_yaml(config))
    at = app("../pages/compare.py", runs=f"{a.name},{b.name}")
    assert "Robustness over SynthFACS's factors" in texts(at.subheader)
    yaw, intensity, occluder, other = charts_on(at)[-4:]
    assert [t["name"] for t in yaw["data"]] == ["lr=0.003", "lr=0.01"]
    assert np.array_equal(array(yaw["data"][0]["y"]), array(yaw["data"][1]["y"]))  # same weights, same accuracies
    assert [t["type"] for t in occluder["data"]] == ["bar", "bar"]
