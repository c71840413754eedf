"""The counterfactual probe (fer_core.probe): at a face's own value the probe's picture is the data set's, pixel for
pixel; sweeping a factor changes that field of the face's spec and nothing else; a run not on SynthFACS is refused;
the CLI writes the probe's files and the Run page draws them."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from apphelpers import app, charts_on, copy_run, texts

from fer_core.config import load_config
from fer_core.data.synthfaces import SynthFaces
from fer_core.data.synthfaces.render import render
from fer_core.probe import SWEEPS, check_steps, counterfactual_spec, parse_steps, probe, probe_paths, read_probe

pytestmark = pytest.mark.usefixtures("one_thread")
SMOKE = Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def faces() -> tuple[SynthFaces, list[int]]:
    """A small test split and faces that cover an occluder, an expression, blur, JPEG and a neutral face."""
    ds = SynthFaces(split="test", test_size=60, image_size=48)
    metas = [ds.meta(i) for i in range(len(ds))]
    picks = {next(i for i, m in enumerate(metas) if m.spec.occluder != "none"),
             next(i for i, m in enumerate(metas) if np.any(m.spec.au > 0) and m.spec.nuisance.blur > 0),
             next(i for i, m in enumerate(metas) if m.spec.nuisance.jpeg and m.blend is not None),
             next(i for i, m in enumerate(metas) if not np.any(m.spec.au > 0))}
    return ds, sorted(picks)


def _own_value(ds: SynthFaces, i: int, factor: str):
    meta = ds.meta(i)
    nz = meta.spec.nuisance
    return {"yaw": meta.spec.yaw, "pitch": meta.spec.pitch, "roll": meta.spec.roll, "occluder": meta.spec.occluder,
            "intensity": meta.intensity, "ambient": nz.ambient, "blur": nz.blur, "noise": nz.noise, "jpeg": nz.jpeg,
            "light": math.degrees(math.atan2(math.hypot(nz.light[0], nz.light[1]), nz.light[2]))}[factor]


def test_the_probe_at_a_faces_own_value_renders_the_data_sets_picture(faces):
    ds, picks = faces
    for i in picks:
        original = ds.render(i)[0]
        for factor in SWEEPS:
            spec = counterfactual_spec(ds, i, factor, _own_value(ds, i, factor))
            image = render(spec, ds.image_size)[0]
            if factor == "light":  # the direction is rebuilt from its angle and azimuth: equal up to rounding
                assert np.abs(image.astype(int) - original).max() <= 1, (i, factor)
            else:
                assert np.array_equal(image, original), (i, factor)


NUISANCE = {"light": "light", "ambient": "ambient", "blur": "blur", "noise": "noise", "jpeg": "jpeg"}
OTHER_STEP = {"yaw": 55.0, "pitch": -17.0, "roll": 12.0, "occluder": "hat", "intensity": 0.25, "light": 60.0,
              "ambient": 0.31, "blur": 1.7, "noise": 13.0, "jpeg": 15}


def test_sweeping_a_factor_changes_that_field_of_the_spec_and_nothing_else(faces):
    ds, picks = faces
    expressive = [i for i in picks if np.any(ds.meta(i).spec.au > 0)]
    for factor, step in OTHER_STEP.items():
        for i in picks:
            before = ds.meta(i).spec
            after = counterfactual_spec(ds, i, factor, step)
            changed = {f.name for f in dataclasses.fields(before)
                       if not _same(getattr(before, f.name), getattr(after, f.name))}
            field = "au" if factor == "intensity" else "nuisance" if factor in NUISANCE else factor
            neutral = factor == "intensity" and i not in expressive  # nothing to scale
            assert changed == (set() if neutral else {field}), (factor, i, changed)
            if factor in NUISANCE:
                moved = {f.name for f in dataclasses.fields(before.nuisance)
                         if getattr(before.nuisance, f.name) != getattr(after.nuisance, f.name)}
                assert moved == {NUISANCE[factor]}, (factor, moved)
    for i in expressive:  # a weaker expression: every action unit moves less (or as little: the AU noise stays)
        weak, own = ds.meta_at_intensity(i, 0.25), ds.meta(i)
        assert weak.spec.au.sum() < own.spec.au.sum() and weak.clean_label == own.clean_label
        assert ds.meta_at_intensity(i, own.intensity).spec.au.tobytes() == own.spec.au.tobytes()


def _same(a, b) -> bool:
    return np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b


def test_steps_are_parsed_and_checked():
    assert parse_steps("yaw", "-60:60:30") == [-60.0, -30.0, 0.0, 30.0, 60.0]
    assert parse_steps("intensity", "0.2, 0.6,1") == [0.2, 0.6, 1.0]
    assert parse_steps("occluder", "none,mask") == ["none", "mask"]
    assert check_steps("yaw", None) == [float(v) for v in range(-60, 61, 10)]
    with pytest.raises(ValueError, match="'a,b,c' or 'start:stop:step'"):
        parse_steps("yaw", "left,right")
    with pytest.raises(ValueError, match=r"\['glasses'\] for occluder are invalid: each must be one of none, "):
        check_steps("occluder", ["none", "glasses"])
    with pytest.raises(ValueError, match=r"\[0.0\] for intensity are invalid"):
        check_steps("intensity", [0.0, 0.5])
    with pytest.raises(ValueError, match="unknown probe factor 'hue'; valid: yaw, pitch, roll, occluder, intensity"):
        check_steps("hue", None)


def _non_synthfaces_run(root: Path) -> Path:
    run = root / "fer-run"
    run.mkdir(parents=True)
    cfg = load_config(SMOKE, ["data.name=fer2013", "data.options={}"])
    (run / "config.yaml").write_text(cfg.to_yaml())
    return run


def test_probe_refuses_a_run_on_another_data_set(tmp_path: Path, capsys: pytest.CaptureFixture):
    from fer_core.cli import main

    run = _non_synthfaces_run(tmp_path)
    with pytest.raises(ValueError, match="probe needs a SynthFACS run; run fer-run trained on fer2013"):
        probe(run, "yaw")
    assert main(["probe", str(run), "--factor", "yaw"]) == 1
    assert "probe needs a SynthFACS run; run fer-run trained on fer2013" in capsys.readouterr().err
    assert not (run / "probe").exists()


def test_cli_probe_writes_the_curve_and_the_faces(finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    from fer_core.cli import main

    run = shutil.copytree(finished_run, tmp_path / "run")
    assert main(["probe", str(run), "--factor", "yaw", "--n", "8", "--steps=-40:40:40"]) == 0
    out = capsys.readouterr().out
    assert "yaw swept on 8 test faces" in out and "-40.0" in out and "flipped" in out
    result = json.loads(probe_paths(run, "yaw")[0].read_text())
    assert result == read_probe(run, "yaw")
    assert result["steps"] == [-40.0, 0.0, 40.0] and result["reference"] == 0.0 and result["n"] == 8
    table = pd.read_csv(probe_paths(run, "yaw")[1])
    assert len(table) == 8 * 3 and sorted(set(table["face"])) == result["faces"]
    for row in result["summary"]:
        at_step = table[table["step"] == row["step"]]
        assert row["accuracy"] == pytest.approx(at_step["correct"].mean())
        assert row["true_prob"] == pytest.approx(at_step["true_prob"].mean(), abs=1e-4)
        assert row["flipped"] == at_step["flipped"].sum()
        assert sum(row["share"].values()) == pytest.approx(1.0)
    assert result["summary"][1]["flipped"] == 0  # the reference step against itself

    ds = SynthFaces(split="test", **load_config(run / "config.yaml").data.options)
    clean = [ds.meta(i).clean_label for i in result["faces"]]
    assert result["labels"] == clean


def test_the_intensity_probe_uses_only_faces_with_an_expression(finished_run: Path, tmp_path: Path):
    run = shutil.copytree(finished_run, tmp_path / "run")
    result = probe(run, "intensity", n=5, steps=[0.3, 1.0], write=False)
    ds = SynthFaces(split="test", **load_config(run / "config.yaml").data.options)
    assert all(np.any(ds.meta(i).spec.au > 0) for i in result["faces"]) and len(result["faces"]) == 5
    assert not (run / "probe").exists()


def test_run_page_runs_the_probe_and_plots_it(runs_root: Path, finished_run: Path):
    run = copy_run(finished_run, runs_root, finished_run.name)
    at = app("../pages/run.py", run=run.name, state={"run.probe_factor": "occluder", "run.probe_n": 10})
    assert texts(at.subheader)[-1] == "Probe"
    assert [b.label for b in at.button] == ["Run the probe"]
    at.button(key="run.probe_go").click().run()
    assert not at.exception and not at.error
    result = read_probe(run, "occluder")
    assert result["n"] == 10 and result["steps"] == list(SWEEPS["occluder"].steps)
    curve = charts_on(at)[-1]
    assert curve["layout"]["xaxis"]["type"] == "category"
    assert [t["name"] for t in curve["data"][:3]] == ["accuracy", "P(true class)", "flipped vs none"]
    at.run()  # the next run of the page finds the probe's file
    assert [b.label for b in at.button] == ["Run the probe again"] and charts_on(at)[-1] == curve


def test_run_page_of_a_run_on_another_data_set_explains_the_probe(runs_root: Path):
    run = _non_synthfaces_run(runs_root)
    (run / "eval").mkdir()
    (run / "eval" / "test_all.json").write_text(json.dumps({
        "split": "test", "subset": "all", "n": 2, "accuracy": 0.5, "confusion": [[1, 0], [1, 0]],
        "class_names": ["neutral", "happy"], "mean_class_accuracy": 0.5, "macro_f1": 0.3}))
    at = app("../pages/run.py", run=run.name)
    assert any("The probe needs a SynthFACS run" in i.value and "fer2013" in i.value for i in at.info)
    assert any("Accuracy per factor needs SynthFACS" in i.value for i in at.info)
