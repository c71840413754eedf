"""Hyper-parameter search (fer_core/search.py, ``python -m fer_core search``): real trials as runs of one group,
a pruned trial cancelled and marked, the study resumed, and a bad space refused before anything runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from fer_core import io
from fer_core.config import ConfigError, load_config
from fer_core.search import load_space, open_study, run_search, search_summary

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs" / "smoke.yaml"
SPACE = {"train.optimizer.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
         "model.options.drop_rate": {"type": "categorical", "choices": [0.0, 0.3]}}


class PruneTrial(optuna.pruners.BasePruner):
    """Prunes one trial once it has reported ``step`` epochs: a pruner whose decision a test can know."""

    def __init__(self, number: int, step: int = 2):
        self.number, self.step = number, step

    def prune(self, study, trial) -> bool:
        return trial.number == self.number and (trial.last_step or 0) >= self.step


def test_a_space_file_with_mistakes_names_the_file_and_each_key(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("train.optimizer.lr: {type: float, low: 0.1, high: 0.01}\n"
                    "train.batch_size: {type: categorical, choices: [32]}\n"
                    "train.epochs: {type: integer, low: 1, high: 3}\n")
    with pytest.raises(ConfigError) as err:
        load_space(path)
    text = "\n".join(err.value.problems)
    assert str(path) in text and "train.optimizer.lr" in text and "below high" in text
    assert "train.batch_size (choices)" in text and "train.epochs" in text
    path.write_text("train.optimizer.lr: [0.1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_space(path)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_space(tmp_path / "missing.yaml")


def test_a_key_or_value_the_config_refuses_stops_the_search_before_any_run(tmp_path):
    base = load_config(SMOKE)
    for bad, words in (({"train.optimizer.lrr": {"type": "float", "low": 0.1, "high": 0.2}}, "lrr"),
                       ({"train.epochs": {"type": "int", "low": 0, "high": 3}}, "train.epochs")):
        with pytest.raises(ConfigError, match=words):
            run_search(base, load_space(bad), 2, group="bad", runs_root=tmp_path)
        assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")], "no run may exist"


def test_trials_are_runs_of_the_group_and_a_pruned_one_is_cancelled_and_marked(tmp_path):
    base = load_config(SMOKE, ["train.epochs=12"])  # a pruned trial must not finish before its cancel lands
    events = []
    started = run_search(base, load_space(SPACE), 3, group="lr-search", runs_root=tmp_path, parallel=2,
                         pruner=PruneTrial(1), progress=events.append, poll_interval=0.2)
    runs = {r["run_id"]: r for r in io.list_runs(tmp_path, group="lr-search")}
    assert sorted(runs) == sorted(started) and len(started) == 3
    by_trial = {r["tags"]["trial"]: r for r in runs.values()}
    assert [by_trial[n]["state"] for n in (0, 2)] == ["done", "done"]
    pruned = by_trial[1]
    assert pruned["state"] == "cancelled" and 2 <= pruned["pruned"] <= pruned["epoch"] < 12
    for r in runs.values():  # each trial's config carries the sampled values
        cfg = io.read_config(r["path"])
        assert cfg["train"]["optimizer"]["lr"] == r["tags"]["train.optimizer.lr"]
        assert 1e-3 <= cfg["train"]["optimizer"]["lr"] <= 1e-2 and cfg["model"]["options"]["drop_rate"] in (0, 0.3)
    assert [e["state"] for e in events if e["event"] == "end" and e["trial"] == 1] == ["pruned"]

    summary = search_summary("lr-search", tmp_path)
    assert [t["state"] for t in summary["trials"]] == ["complete", "pruned", "complete"]
    for t in summary["trials"]:
        if t["state"] == "complete":
            val = [m["val_acc"] for m in io.read_metrics(tmp_path / t["run_id"])]
            assert t["value"] == pytest.approx(max(val)) and t["epochs"] == 12
    assert summary["best"]["value"] == max(t["value"] for t in summary["trials"] if t["state"] == "complete")
    if len({t["value"] for t in summary["trials"] if t["state"] == "complete"}) > 1:
        assert set(summary["importance"]) == set(SPACE)
        assert pytest.approx(sum(summary["importance"].values())) == 1.0
    else:  # fANOVA needs objectives that differ (the Compare page test below has some that do)
        assert summary["importance"] == {}

    # a search killed with a trial still running (as if its process died), then the same search again
    study = open_study("lr-search", tmp_path)
    study.ask()
    more = run_search(base, load_space(SPACE), 5, group="lr-search", runs_root=tmp_path, poll_interval=0.2)
    states = [t["state"] for t in search_summary("lr-search", tmp_path)["trials"]]
    assert states[:4] == ["complete", "pruned", "complete", "failed"] and len(states) == 5 and len(more) == 1
    assert len(io.list_runs(tmp_path, group="lr-search")) == 4


def test_the_command_line_runs_a_search_and_prints_its_table(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(io.dump_yaml(SPACE))
    out = subprocess.run([sys.executable, "-m", "fer_core", "search", "--config", str(SMOKE), "--space", str(space),
                          "--trials", "2", "--set", "train.epochs=1", "--group", "cli-search", "--runs-dir",
                          str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "search cli-search: 2 trials in all" in out.stdout and "best: trial" in out.stdout
    assert out.stdout.count("complete") >= 2
    bad = subprocess.run([sys.executable, "-m", "fer_core", "search", "--config", str(SMOKE), "--space",
                          str(tmp_path / "nope.yaml"), "--trials", "2"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "nope.yaml" in bad.stderr and "Traceback" not in bad.stderr


def test_the_compare_page_shows_a_search_group_trial_by_trial_with_importance(runs_root: Path):
    from apphelpers import app, array, charts_on, texts

    base = load_config(SMOKE, ["train.epochs=2"])
    run_search(base, load_space(SPACE), 3, group="page-search", runs_root=runs_root, pruner=PruneTrial(1, step=1),
               poll_interval=0.2)
    summary = search_summary("page-search", runs_root)
    assert [t["state"] for t in summary["trials"]] == ["complete", "pruned", "complete"]
    at = app("../pages/compare.py", group="page-search")
    assert not at.error and "Search" in texts(at.subheader)
    figures = charts_on(at)
    trials = next(f for f in figures if any(t.get("name") == "best so far" for t in f["data"]))
    points = {t["name"]: t for t in trials["data"]}
    assert array(points["complete"]["x"]).tolist() == [0, 2] and array(points["pruned"]["x"]).tolist() == [1]
    assert array(points["complete"]["y"]).tolist() == pytest.approx(
        [100 * summary["trials"][n]["value"] for n in (0, 2)])
    bars = figures[figures.index(trials) + 1]["data"][0]
    assert sorted(array(bars["y"]).tolist()) == sorted(SPACE)
    table = at.dataframe[-1].value
    assert table["state"].tolist() == ["complete", "pruned", "complete"] and len(table) == 3
