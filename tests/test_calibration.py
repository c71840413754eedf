"""Calibration: the metrics against hand-computed values, temperature scaling, the run's calibration.json and eval
files, ``python -m fer_core calibrate``, calibrated predictions, and the Run, Compare and Explain pages showing them.

The trained run is the session's ``finished_run`` (configs/smoke.yaml), copied before anything modifies it.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from apphelpers import app, array, charts_on, copy_run, texts

from app import ui
from fer_core import calibration, io
from fer_core.cli import main
from fer_core.config import load_config
from fer_core.evaluate import calibrate_run, classification_metrics
from fer_core.predict import Predictor

pytestmark = pytest.mark.usefixtures("one_thread")

# Five faces, three classes. Top-1 confidence, prediction, truth, correct?, its 15-bin index (floor(15 * conf)):
#   A .70 -> 0, truth 0, right, bin 10     B .72 -> 1, truth 0, wrong, bin 10     C .90 -> 2, truth 2, right, bin 13
#   D .50 -> 0, truth 1, wrong, bin 7      E .95 -> 0, truth 0, right, bin 14
PROBS = np.array([[0.70, 0.20, 0.10], [0.10, 0.72, 0.18], [0.05, 0.05, 0.90], [0.50, 0.30, 0.20],
                  [0.95, 0.03, 0.02]])
LABELS = np.array([0, 0, 2, 1, 0])


# --------------------------------------------------------------------------------------------- metrics
def test_ece_with_equal_width_bins_by_hand():
    # bin 10: 2 faces, accuracy 1/2, confidence (.70 + .72) / 2 = .71 -> |.5 - .71| * 2/5 = .084
    # bin 13: |1 - .90| * 1/5 = .02;  bin 7: |0 - .50| * 1/5 = .10;  bin 14: |1 - .95| * 1/5 = .01  -> .214
    assert calibration.expected_calibration_error(PROBS, LABELS) == pytest.approx(0.214, abs=1e-6)


def test_adaptive_ece_with_equal_mass_bins_by_hand():
    # 15 bins, 5 faces: one face a bin -> mean |correct - confidence| = (.30 + .72 + .10 + .50 + .05) / 5 = .334
    assert calibration.adaptive_calibration_error(PROBS, LABELS) == pytest.approx(0.334)
    # 2 bins of the faces sorted by confidence: {.50 wrong, .70 right, .72 wrong} and {.90 right, .95 right}
    # |1/3 - .64| * 3/5 + |1 - .925| * 2/5 = .184 + .03 = .214
    assert calibration.adaptive_calibration_error(PROBS, LABELS, n_bins=2) == pytest.approx(0.214)
    # 5 bins of one face each: the same as 15
    assert calibration.adaptive_calibration_error(PROBS, LABELS, n_bins=5) == pytest.approx(0.334)


def test_nll_and_brier_by_hand():
    # NLL: -(ln .70 + ln .10 + ln .90 + ln .30 + ln .95) / 5
    #    = (.356675 + 2.302585 + .105361 + 1.203973 + .051293) / 5 = .803977
    assert calibration.negative_log_likelihood(np.log(PROBS), LABELS) == pytest.approx(0.803977, abs=1e-6)
    # Brier, sum over classes: A .3² + .2² + .1² = .14; B .9² + .72² + .18² = 1.3608; C .05² + .05² + .1² = .015;
    # D .5² + .7² + .2² = .78; E .05² + .03² + .02² = .0038; mean = 2.2996 / 5 = .45992
    assert calibration.brier_score(PROBS, LABELS) == pytest.approx(0.45992)
    # the convention's ends: right and sure 0, wrong and sure 2, uniform over seven classes 6/7
    assert calibration.brier_score(np.eye(3), [0, 1, 2]) == pytest.approx(0.0)
    assert calibration.brier_score(np.eye(3), [1, 2, 0]) == pytest.approx(2.0)
    assert calibration.brier_score(np.full((4, 7), 1 / 7), [0, 3, 5, 6]) == pytest.approx(6 / 7)


def test_temperature_one_of_log_probabilities_gives_the_same_metrics():
    metrics = calibration.calibration_metrics(np.log(PROBS), LABELS)
    assert metrics["ece"] == pytest.approx(0.214, abs=1e-6) and metrics["brier"] == pytest.approx(0.45992)
    assert metrics["ece_adaptive"] == pytest.approx(0.334) and metrics["nll"] == pytest.approx(0.803977, abs=1e-6)
    hotter = calibration.calibration_metrics(np.log(PROBS), LABELS, temperature=2.0)
    assert hotter["nll"] == pytest.approx(float(torch.nn.functional.cross_entropy(
        torch.log(torch.tensor(PROBS)) / 2.0, torch.tensor(LABELS))))


def test_reliability_bins_by_hand_and_consistent_with_the_ece():
    rel = calibration.reliability_bins(PROBS, LABELS)
    assert len(rel["edges"]) == 16 and rel["edges"][0] == 0.0 and rel["edges"][-1] == 1.0
    assert rel["count"] == [0] * 7 + [1, 0, 0, 2, 0, 0, 1, 1]
    assert rel["accuracy"][10] == 0.5 and rel["confidence"][10] == pytest.approx(0.71)
    assert rel["accuracy"][7] == 0.0 and rel["confidence"][7] == pytest.approx(0.5)
    assert rel["accuracy"][0] is None and rel["confidence"][0] is None
    rng = np.random.default_rng(1)
    logits = torch.tensor(rng.normal(size=(300, 7)) * 2)
    labels = rng.integers(0, 7, 300)
    probs = logits.softmax(1)
    rel = calibration.reliability_bins(probs, labels)
    gaps = sum(n * abs(a - c) for n, a, c in zip(rel["count"], rel["accuracy"], rel["confidence"], strict=True) if n)
    assert sum(rel["count"]) == 300
    assert gaps / 300 == pytest.approx(calibration.expected_calibration_error(probs, labels), abs=1e-5)


def test_no_faces_and_bad_input():
    empty = calibration.calibration_metrics(np.zeros((0, 3)), np.zeros(0, dtype=int))
    assert {k: empty[k] for k in ("ece", "ece_adaptive", "nll", "brier")} == dict.fromkeys(
        ("ece", "ece_adaptive", "nll", "brier"))
    assert empty["reliability"]["count"] == [0] * 15
    with pytest.raises(ValueError, match="probabilities"):
        calibration.expected_calibration_error(PROBS * 2, LABELS)
    with pytest.raises(ValueError, match="class indices 0..2"):
        calibration.brier_score(PROBS, [0, 1, 2, 3, 0])
    with pytest.raises(ValueError, match="5 labels"):
        calibration.adaptive_calibration_error(PROBS, [0, 1])
    with pytest.raises(ValueError, match="above 0"):
        calibration.calibration_metrics(PROBS, LABELS, temperature=0)
    with pytest.raises(ValueError, match="no faces"):
        calibration.fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int))


def test_classification_metrics_of_no_faces():
    m = classification_metrics(np.zeros(0, dtype=int), np.zeros(0, dtype=int), 3)
    assert m["n"] == 0 and math.isnan(m["accuracy"]) and m["confusion"] == [[0] * 3] * 3
    assert m["per_class"]["recall"] == [None] * 3


# --------------------------------------------------------------------------------------------- temperature scaling
@pytest.mark.parametrize("t0", [0.5, 2.5])
def test_temperature_scaling_recovers_a_known_temperature(t0):
    # true logits z, labels drawn from softmax(z); the model reports z * t0 (over-confident for t0 > 1), so the
    # temperature that undoes it is t0
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(20000, 7, generator=gen, dtype=torch.float64) * 2.0
    labels = torch.multinomial(z.softmax(1), 1, generator=gen)[:, 0]
    fitted = calibration.fit_temperature(z * t0, labels)
    assert fitted == pytest.approx(t0, rel=0.05)
    before = calibration.negative_log_likelihood(z * t0, labels)
    assert calibration.negative_log_likelihood(z * t0, labels, fitted) < before
    assert calibration.calibration_metrics(z * t0, labels, fitted)["ece"] < calibration.calibration_metrics(
        z * t0, labels)["ece"]


# --------------------------------------------------------------------------------------------- a trained run
def test_training_fits_a_temperature_and_every_eval_file_carries_calibration(finished_run: Path):
    cfg = load_config(finished_run / "config.yaml")
    found = io.read_calibration(finished_run)
    assert found["split"] == "val" and found["n"] == cfg.data.options["val_size"] and found["weights"] == "best"
    assert found["temperature"] > 0 and found["after"]["nll"] <= found["before"]["nll"]
    assert found["before"]["accuracy"] == found["after"]["accuracy"]
    evals = io.read_eval(finished_run)
    for key, result in evals.items():
        assert {"ece", "ece_adaptive", "nll", "brier", "reliability", "calibrated"} <= set(result), key
        assert result["calibrated"]["temperature"] == found["temperature"]
        if result["n"]:
            assert sum(result["reliability"]["count"]) == result["n"]
            assert result["nll"] == pytest.approx(result["loss"], abs=1e-5)
    total = evals["test/all"]
    preds = io.read_predictions(finished_run, "test", "all")
    probs = preds[[f"prob_{c}" for c in total["class_names"]]].to_numpy()
    assert calibration.expected_calibration_error(probs / probs.sum(1, keepdims=True), preds["label"]) == \
        pytest.approx(total["ece"], abs=2e-3)  # the CSV's probabilities are rounded to 5 decimals


def test_calibrate_command_fits_and_reevaluates_a_copy(finished_run: Path, tmp_path: Path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    io.calibration_path(run).unlink()
    for path in (run / "eval").glob("*.json"):  # as an eval written without a temperature
        result = json.loads(path.read_text())
        del result["calibrated"]
        path.write_text(json.dumps(result))
    assert main(["evaluate", str(run), "--subset", "all"]) == 0
    assert "python -m fer_core calibrate run" in capsys.readouterr().out
    assert "calibrated" not in io.read_eval(run)["test/all"]
    with pytest.raises(FileNotFoundError, match="python -m fer_core calibrate run"):
        Predictor.from_run(run, calibrated=True)

    assert main(["calibrate", str(run)]) == 0
    out = capsys.readouterr().out
    found = io.read_calibration(run)
    assert found["temperature"] == pytest.approx(io.read_calibration(finished_run)["temperature"], rel=1e-4)
    assert f"temperature T = {found['temperature']:.4f}, fitted on val (48 faces" in out
    evals = io.read_eval(run)
    assert all("calibrated" in r for r in evals.values())
    line = next(x for x in out.splitlines() if x.startswith("test/all "))
    ece = evals["test/all"]
    assert f"{ece['ece']:.4f} -> {ece['calibrated']['ece']:.4f}" in line
    assert main(["evaluate", str(run), "--subset", "all"]) == 0
    assert "ece_calibrated" in capsys.readouterr().out


def test_a_run_without_a_validation_split_cannot_be_temperature_scaled(finished_run: Path, tmp_path: Path, capsys):
    run = tmp_path / "no-val-run"
    shutil.copytree(finished_run, run)
    empty = tmp_path / "faces"
    empty.mkdir()
    cfg = load_config(run / "config.yaml")
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(
        update={"name": "imagefolder", "root": str(empty), "options": {"val_fraction": None}})})
    io.atomic_write_text(run / "config.yaml", cfg.to_yaml())
    before = io.read_calibration(run)
    with pytest.raises(ValueError, match="run no-val-run cannot be temperature-scaled: its data set 'imagefolder' "
                                         "has no validation split"):
        calibrate_run(run)
    assert main(["calibrate", str(run)]) == 1
    assert "cannot be temperature-scaled" in capsys.readouterr().err
    assert io.read_calibration(run) == before  # nothing written


def test_predictor_calibrated_probabilities_are_softmax_of_logits_over_t(finished_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    t = io.read_calibration(run)["temperature"]
    plain, scaled = Predictor.from_run(run), Predictor.from_run(run, calibrated=True)
    assert plain.temperature is None and scaled.temperature == t and f"temperature={t:.4g}" in repr(scaled)
    crops = [np.random.default_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8) for i in range(3)]
    with torch.inference_mode():
        x = torch.cat([plain._transform(torch.from_numpy(c).permute(2, 0, 1)[None]) for c in crops])
        logits = plain.model(x).double()
    assert np.allclose(scaled.probabilities(crops), (logits / t).softmax(1).numpy(), atol=1e-6)
    assert np.allclose(plain.probabilities(crops), logits.softmax(1).numpy(), atol=1e-6)
    shared = plain.with_temperature(t)
    assert shared.model is plain.model and np.allclose(shared.probabilities(crops), scaled.probabilities(crops))
    assert scaled.predict_crop(crops[0]).top == plain.predict_crop(crops[0]).top  # T changes no prediction

    found = io.read_calibration(run)
    io.atomic_write_json(io.calibration_path(run), {**found, "weights_sha256": "0" * 64})
    with pytest.raises(ValueError, match="fitted for other 'best' weights"):
        Predictor.from_run(run, calibrated=True)
    with pytest.raises(ValueError, match="fitted for its 'best' weights, not 'last'"):
        Predictor.from_run(run, weights="last", calibrated=True)


# --------------------------------------------------------------------------------------------- app
RUN_PAGE, COMPARE_PAGE, EXPLAIN_PAGE = "../pages/run.py", "../pages/compare.py", "../pages/explain.py"


def _strip_calibration(run: Path) -> None:
    """Make a run's eval files look like ones written before calibration existed."""
    for path in (run / "eval").glob("*.json"):
        result = json.loads(path.read_text())
        for key in ("ece", "ece_adaptive", "nll", "brier", "reliability", "calibrated"):
            result.pop(key, None)
        path.write_text(json.dumps(result))
    io.calibration_path(run).unlink(missing_ok=True)


def test_run_page_shows_ece_and_reliability_diagrams(runs_root: Path, finished_run: Path):
    run = copy_run(finished_run, runs_root, finished_run.name)
    at = app(RUN_PAGE, run=run.name)
    evals = io.read_eval(run)
    table = at.dataframe[0].value
    row = table[table["subset"] == "all"].iloc[0]
    assert row["ECE"] == ui.pct(evals["test/all"]["ece"])
    assert row["ECE after T"] == ui.pct(evals["test/all"]["calibrated"]["ece"])
    assert row["NLL"] == pytest.approx(evals["test/all"]["nll"])
    diagrams = [f for f in charts_on(at) if (f["layout"].get("title") or {}).get("text") == "Reliability"]
    assert len(diagrams) == len(evals)
    names = [t["name"] for t in diagrams[0]["data"]]
    t = evals["test/all"]["calibrated"]["temperature"]
    assert names == ["perfect calibration", "before: accuracy", "before: gap to confidence", f"after T={t:.2f}"]
    found = io.read_calibration(run)
    assert any(f"fitted on the val split ({found['n']} faces" in m.value for m in at.markdown)


def test_run_page_of_an_old_run_shows_dashes(runs_root: Path, finished_run: Path):
    run = copy_run(finished_run, runs_root, finished_run.name)
    _strip_calibration(run)
    at = app(RUN_PAGE, run=run.name)
    assert not at.error
    table = at.dataframe[0].value
    assert table[["ECE", "ECE after T", "NLL", "Brier"]].isna().all().all()
    assert table["accuracy"].notna().all()
    assert not [f for f in charts_on(at) if (f["layout"].get("title") or {}).get("text") == "Reliability"]
    assert any("No calibration numbers" in c.value for c in at.caption)


def reliability_overlay(at) -> dict:
    """The Compare page's overlay of reliability diagrams (the one chart whose title starts "Reliability")."""
    titles = [str((f["layout"].get("title") or {}).get("text", "")) for f in charts_on(at)]
    found = [f for f, title in zip(charts_on(at), titles, strict=True) if title.startswith("Reliability")]
    assert len(found) == 1, titles
    return found[0]


def test_compare_page_shows_ece_beside_accuracy_and_overlays_reliability(runs_root: Path, finished_run: Path):
    a = copy_run(finished_run, runs_root, "20260101-100000-a-0001")
    b = copy_run(finished_run, runs_root, "20260101-110000-b-0002")
    _strip_calibration(b)
    at = app(COMPARE_PAGE, runs=f"{a.name},{b.name}")
    assert not at.error and "Calibration" in texts(at.subheader)
    table = at.dataframe[-1].value
    result = io.read_eval(a)["test/all"]
    first, second = table.iloc[0], table.iloc[1]
    assert first["accuracy"] == pytest.approx(100 * result["accuracy"]) == pytest.approx(second["accuracy"])
    assert first["ece"] == pytest.approx(100 * result["ece"]) and np.isnan(second["ece"])
    assert first["temperature"] == pytest.approx(result["calibrated"]["temperature"])
    overlay = reliability_overlay(at)  # the factor charts of tests/test_factors.py follow it
    assert overlay["layout"]["title"]["text"] == "Reliability, test/all"
    assert [t["name"] for t in overlay["data"]] == ["perfect calibration", table.index[0]]  # b has no data
    at.toggle(key="compare.calibrated").set_value(True).run()
    assert not at.exception and reliability_overlay(at)["layout"]["title"]["text"] == "Reliability, test/all (after T)"


def test_explain_page_offers_calibrated_probabilities_for_a_run_with_a_temperature(runs_root: Path,
                                                                                   finished_run: Path):
    run = copy_run(finished_run, runs_root, finished_run.name)
    at = app(EXPLAIN_PAGE, {"explain.source": "SynthFACS test face", "explain.methods": ["gradcam"]})
    assert "explain.calibrated" not in [t.key for t in at.toggle]  # the pretrained model has no temperature
    at.selectbox(key="explain.model").select(f"run:{run.name}").run()
    plain = charts_on(at)[0]["data"][0]
    at.toggle(key="explain.calibrated").set_value(True).run()
    assert not at.exception and not at.error
    scaled = charts_on(at)[0]["data"][0]
    t = io.read_calibration(run)["temperature"]
    p, q = array(plain["x"]).astype(float), array(scaled["x"]).astype(float)
    # the chart's percentages: softmax(log p / T) renormalised
    expected = np.exp(np.log(p / 100) / t)
    assert np.allclose(q / 100, expected / expected.sum(), atol=2e-3)
    assert any("after temperature scaling" in c.value for c in at.caption)
