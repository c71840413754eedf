"""AppTest smoke tests of every page, over real run folders written by real (tiny) training runs.

The finished run is the session's ``smoke_run`` (conftest.py: configs/smoke.yaml trained once); the demo-button test
trains its own, smaller run through ``fer_core.lifecycle`` in a child process, the way the app does. Running, failed and
interrupted runs are copies of the finished one with ``status.json`` rewritten through ``fer_core.io``, so the pages
see exactly the files the trainer writes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from apphelpers import ROOT, SUBSETS, TINY, app, array, charts_on, copy_run, texts, wait_until_stopped

from app import charts, ui
from fer_core import io
from fer_core.config import load_config

RUN_PAGE = "../pages/run.py"  # relative to app/Home.py, as AppTest.switch_page wants it


@pytest.fixture
def tiny_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A seconds-long demo config (smoke.yaml made smaller), set as ``$FER_DEMO_CONFIG`` for the demo button."""
    path = tmp_path / "tiny_demo.yaml"
    path.write_text(load_config(ROOT / "configs" / "smoke.yaml", TINY).to_yaml())
    monkeypatch.setenv("FER_DEMO_CONFIG", str(path))
    return path


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_pid():
    """The pid of a harmless live process (never the test process, so a cancel cannot hit pytest)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


# --------------------------------------------------------------------------------------------- Home
def test_home_without_runs_offers_the_demo(runs_root: Path):
    at = app()
    assert texts(at.title) == ["FER Lab"]
    assert "No runs yet" in texts(at.subheader)
    assert [b.label for b in at.button] == ["Train a demo model on SynthFACS"]
    assert "Runs" not in texts(at.subheader)
    assert texts(at.subheader)[-2:] == ["Data sets", "Models"]
    assert any("**synthfaces** (built in)" in m.value for m in at.markdown)
    models = at.dataframe[0].value
    assert "small_cnn" in set(models["model"]) and (models["input"].str.count("×") == 2).all()


def test_demo_button_trains_in_a_child_process_and_the_run_appears(runs_root: Path, tiny_demo: Path):
    at = app()
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    launched = [p.name for p in runs_root.iterdir()]
    assert len(launched) == 1, "one click, one run folder"
    run_dir = runs_root / launched[0]
    assert io.read_status(run_dir)["pid"] != os.getpid(), "the app must not train in its own process"
    assert io.read_config(run_dir)["train"] == load_config(tiny_demo).to_dict()["train"]
    if io.run_state(run_dir) in ui.ACTIVE_STATES:  # usually: the child is still rendering data
        assert "Training now" in texts(at.subheader)
        assert at.get("progress"), "an active run shows a progress bar"
    assert wait_until_stopped(run_dir) == "done"

    at.run()  # what the 1-second fragment timer does in a browser
    assert not at.exception
    assert any(launched[0] in s.value and "finished" in s.value for s in at.success)
    runs = at.dataframe[0].value
    assert list(runs["state"]) == ["done"] and runs["run"][0].endswith(launched[0])

    fresh = app()  # a reload (new session) finds the run from its folder alone
    assert fresh.dataframe[0].value["state"].tolist() == ["done"]
    assert not fresh.button, "the demo button is only for an empty runs folder"


def test_home_lists_runs_with_accuracies(runs_root: Path, finished_run: Path, dead_pid: int):
    copy_run(finished_run, runs_root, finished_run.name)
    copy_run(finished_run, runs_root, "20260101-130000-broken-0002", state="running", pid=dead_pid, epoch=1)
    at = app()
    assert "Runs" in texts(at.subheader) and not at.button
    runs = at.dataframe[0].value
    assert list(runs["run"]) == [ui.run_link("20260101-130000-broken-0002"), ui.run_link(finished_run.name)]
    assert list(runs["state"]) == ["interrupted", "done"]
    done = runs.iloc[1]
    assert done["epochs"] == "2/2"
    assert 0 <= done["test acc"] <= 100 and 0 <= done["val acc"] <= 100
    for subset in SUBSETS[1:]:
        assert subset in runs.columns and 0 <= done[subset] <= 100
    assert np.isnan(runs.iloc[0]["test acc"])
    # the interrupted run was never evaluated: its accuracy cells show a dash, not "None"
    assert runs.iloc[0][["test acc", *SUBSETS[1:]]].isna().all()
    assert at.dataframe[0].proto.placeholder == ui.MISSING == "—"


# --------------------------------------------------------------------------------------------- Run page
def test_run_page_without_runs_says_how_to_start(runs_root: Path):
    at = app(RUN_PAGE)
    assert any("No runs" in i.value for i in at.info)
    assert not at.selectbox


def test_run_page_shows_a_finished_run(runs_root: Path, finished_run: Path):
    copy_run(finished_run, runs_root, finished_run.name)
    at = app(RUN_PAGE, run=finished_run.name)
    assert at.selectbox[0].value == finished_run.name
    assert any(finished_run.name in m.value and "green-badge[done]" in m.value for m in at.markdown)
    assert not at.error and not at.warning
    assert texts(at.subheader) == ["Learning curves", "Evaluation", "Robustness", "Probe"]

    evals = io.read_eval(finished_run)
    metrics = at.dataframe[0].value
    assert list(metrics["subset"][: len(SUBSETS)]) == SUBSETS and set(metrics["split"]) == {"test"}
    assert len(metrics) == len(evals) and metrics["n"].iloc[0] == metrics["n"].max()

    figures = charts_on(at)
    # curves, a confusion matrix, recall bars and a reliability diagram per tab, then four factor charts
    # (tests/test_factors.py)
    assert len(figures) == 1 + 3 * len(evals) + 4
    curves = figures[0]["data"]
    assert {t["name"] for t in curves} == {"train", "val"} and len(curves) == 4
    assert all(len(array(t["x"])) == 2 for t in curves)  # two epochs
    heatmap = figures[1]["data"][0]
    assert heatmap["type"] == "heatmap" and heatmap["x"] == evals["test/all"]["class_names"]
    assert at.toggle[0].value is True and array(heatmap["z"]).max() <= 100.0

    at.toggle[0].set_value(False).run()
    assert not at.exception
    counts = array(charts_on(at)[1]["data"][0]["z"])
    assert counts.sum() == metrics["n"].iloc[0]  # counts add up to the test split


def test_run_page_follows_the_query_param_and_the_select_box(runs_root: Path, finished_run: Path):
    copy_run(finished_run, runs_root, finished_run.name)
    failed = "20260101-140000-failed-0003"
    copy_run(finished_run, runs_root, failed, state="failed", error="RuntimeError: loss is NaN",
             error_at="train.py:120 train_one_epoch")
    at = app(RUN_PAGE, run=failed)
    assert at.selectbox[0].value == failed
    assert any("loss is NaN" in e.value and "train_one_epoch" in e.value for e in at.error)
    assert any("No evaluation" in i.value for i in at.info)
    at.selectbox[0].select(finished_run.name).run()
    assert not at.exception and not at.error
    assert at.query_params["run"] == finished_run.name


def test_run_page_unknown_run_falls_back_to_newest(runs_root: Path, finished_run: Path):
    copy_run(finished_run, runs_root, finished_run.name)
    at = app(RUN_PAGE, run="no-such-run")
    assert any("no-such-run" in w.value for w in at.warning)
    assert at.selectbox[0].value == finished_run.name


def test_run_page_of_a_running_run_shows_progress(runs_root: Path, finished_run: Path, live_pid: int):
    running = "20260101-150000-running-0004"
    copy_run(finished_run, runs_root, running, state="running", pid=live_pid, epoch=1)
    at = app(RUN_PAGE, run=running)
    assert any("blue-badge[running]" in m.value for m in at.markdown)
    assert at.get("progress") and [b.label for b in at.button] == ["Cancel this run"]
    assert any("when training has finished" in i.value for i in at.info)
    assert len(charts_on(at)) == 1  # learning curves so far, no evaluation yet


def test_run_page_of_an_interrupted_run_says_so(runs_root: Path, finished_run: Path, dead_pid: int):
    gone = "20260101-160000-gone-0005"
    copy_run(finished_run, runs_root, gone, state="running", pid=dead_pid, epoch=1)
    at = app(RUN_PAGE, run=gone)
    assert any("orange-badge[interrupted]" in m.value for m in at.markdown)
    assert any("interrupted" in w.value and str(dead_pid) in w.value for w in at.warning)
    assert [b.label for b in at.button] == ["Resume from the last checkpoint"] and not at.get("progress")
    assert any("Last lines of log.txt" in e.label for e in at.expander)


# --------------------------------------------------------------------------------------------- helpers
def test_confusion_matrix_normalises_rows_and_checks_shape():
    fig = charts.confusion_matrix([[3, 1], [0, 0]], ["happy", "sad"], normalise=True)
    z = np.asarray(fig.data[0].z)
    assert z[0].tolist() == [75.0, 25.0] and z[1].tolist() == [0.0, 0.0]
    assert list(fig.data[0].x) == ["happy", "sad"]
    with pytest.raises(ValueError, match="3 class names"):
        charts.confusion_matrix([[1, 0], [0, 1]], ["a", "b", "c"])


def test_eval_keys_and_subsets_are_ordered():
    keys = ["val/all", "test/pose45", "test/all", "test/zzz", "test/occlusion", "test/clean"]
    assert ui.ordered_eval_keys(keys) == ["test/all", "test/clean", "test/occlusion", "test/pose45", "test/zzz",
                                          "val/all"]
    assert ui.ordered_subsets({"ambiguous", "mine", "pose30"}) == ["pose30", "ambiguous", "mine"]


def test_subset_order_comes_from_the_library_and_importing_ui_stays_light():
    from fer_core.data.subsets import SUBSET_OPTIONS
    from fer_core.data.synthfaces import SUBSETS as SYNTH

    order = ui.subset_order()
    assert order[: 1 + len(SYNTH)] == ("all", *SYNTH), "SynthFACS's subsets in the library's order"
    assert set(SUBSET_OPTIONS) <= set(order) and len(set(order)) == len(order), "RAN's subsets too, once each"
    # every page imports app.ui: it must not pull in the data registry (and torch with it) just by being imported
    code = ("import sys; import app.ui, app.charts, app.pickers, app.config_form; "
            "print(sorted(m for m in ('torch', 'fer_core.data') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
