"""The Compare and Confusion-browser pages and the logic behind them (:mod:`fer_core.compare`).

Unit tests use small hand-made tables; the page tests use copies of the session's tiny finished run (``finished_run``)
with one config value changed, or tagged as a sweep group with known accuracies written into their ``eval/`` files.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from apphelpers import SUBSETS, app, array, charts_on, copy_run, texts

from fer_core import compare, io

COMPARE_PAGE = "../pages/compare.py"
CONFUSION_PAGE = "../pages/confusion.py"


def set_config(run_dir: Path, **changes: object) -> None:
    """Rewrite keys of a run's config.yaml: dotted keys (``train.optimizer.lr``) or top-level ones (``tags``)."""
    cfg = io.read_config(run_dir)
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = cfg
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def set_accuracy(run_dir: Path, accuracy: dict[str, float]) -> None:
    """Overwrite the test accuracy of some subsets in a run's eval files."""
    for subset, value in accuracy.items():
        path = io.eval_paths(run_dir, "test", subset)[0]
        result = io.read_eval(run_dir)[f"test/{subset}"]
        io.atomic_write_json(path, {**result, "accuracy": value})


# --------------------------------------------------------------------------------------------- configs and tags
def test_config_differences_lists_only_differing_keys():
    a = {"name": "x", "seed": 0, "train": {"epochs": 2, "optimizer": {"lr": 0.01, "name": "adamw"}},
         "data": {"options": {}}, "tags": {"k": 1}}
    b = {"name": "y", "seed": 0, "train": {"epochs": 2, "optimizer": {"lr": 0.001, "name": "adamw"}, "sam": True},
         "data": {"options": {}}, "tags": {"k": 2}}
    differing, equal = compare.config_differences({"A": a, "B": b})
    assert list(differing.index) == ["train.optimizer.lr", "train.sam"]
    assert differing.loc["train.optimizer.lr"].tolist() == ["0.01", "0.001"]
    assert differing.loc["train.sam"].tolist() == [compare.MISSING, "true"]
    assert set(equal["key"]) == {"seed", "train.epochs", "train.optimizer.name", "data.options"}
    assert compare.flatten({"a": {"b": [1, 2], "c": {}}}) == {"a.b": [1, 2], "a.c": {}}


def test_swept_keys_drop_keys_a_variant_determines():
    tags = [{"variant": "base", "data.label_noise": 0.0, "seed": 0, "fixed": 1},
            {"variant": "base", "data.label_noise": 0.3, "seed": 1, "fixed": 1},
            {"variant": "scn", "model.name": "scn", "data.label_noise": 0.0, "seed": 1, "fixed": 1},
            {"variant": "scn", "model.name": "scn", "data.label_noise": 0.3, "seed": 0, "fixed": 1}]
    assert compare.swept_keys(tags) == ["variant", "data.label_noise", "seed"]
    assert compare.swept_keys([{"a": 1}, {"a": 1}]) == []


def test_short_labels_prefer_swept_tags_then_names_then_config():
    runs = [{"run_id": "r1", "name": "s", "tags": {"variant": "scn", "data.label_noise": 0.1}},
            {"run_id": "r2", "name": "s", "tags": {"variant": "base", "data.label_noise": 0.1}}]
    assert compare.short_labels(runs) == ["scn", "base"]
    runs = [{"run_id": "r1", "name": "a", "tags": {}}, {"run_id": "r2", "name": "b", "tags": {}}]
    assert compare.short_labels(runs) == ["a", "b"]
    runs = [{"run_id": "r1", "name": "s", "tags": {}}, {"run_id": "r2", "name": "s", "tags": {}}]
    configs = [{"train": {"optimizer": {"lr": 0.1}}}, {"train": {"optimizer": {"lr": 0.01}}}]
    assert compare.short_labels(runs, configs) == ["lr=0.1", "lr=0.01"]
    assert compare.short_labels(runs) == ["r1", "r2"]
    same = [{"run_id": "r1", "name": "s", "tags": {}}, {"run_id": "r2", "name": "s", "tags": {}}]
    assert compare.short_labels(same, [{}, {}]) == ["r1", "r2"]
    # a run trained alone beside a sweep's run: the sweep's run by its tag, the other by its id, never "-"
    mixed = [{"run_id": "r1", "name": "s", "tags": {}}, {"run_id": "r2", "name": "s", "tags": {"variant": "base"}}]
    assert compare.short_labels(mixed) == ["r1", "base"]


# --------------------------------------------------------------------------------------------- metrics
def _result(confusion, accuracy=None, names=("neutral", "happy", "sad")):
    confusion = np.asarray(confusion)
    acc = np.trace(confusion) / confusion.sum() if accuracy is None else accuracy
    return {"confusion": confusion.tolist(), "class_names": list(names), "accuracy": acc}


def test_metrics_table_best_and_markdown():
    evals = {"A": {"test/all": _result([[1]], 0.5, ["x"]), "test/pose30": _result([[1]], 0.7, ["x"]),
                   "val/all": _result([[1]], 0.9, ["x"])},
             "B": {"test/pose30": _result([[1]], 0.7, ["x"]), "test/all": _result([[1]], 0.6, ["x"])}}
    table = compare.metrics_table(evals)
    assert list(table.columns) == ["all", "pose30"] and list(table.index) == ["A", "B"]
    assert table.loc["B", "all"] == 0.6
    best = compare.best_per_column(table)
    assert best == {"all": ["B"], "pose30": ["A", "B"]}  # a tie: both bold
    md = compare.markdown_table(table, best)
    assert "| A | 50.0 | **70.0** |" in md and "| B | **60.0** | **70.0** |" in md
    empty = compare.best_per_column(pd.DataFrame({"c": [math.nan]}, index=["A"]))
    assert empty == {"c": []}


def test_confusion_difference_and_class_deltas():
    a = _result([[8, 2, 0], [0, 5, 5], [0, 0, 10]])
    b = _result([[9, 1, 0], [0, 8, 2], [1, 0, 9]])
    diff = compare.confusion_difference(a, b, normalise=True)
    assert diff[0, 0] == pytest.approx(10.0) and diff[1, 1] == pytest.approx(30.0)
    assert np.allclose(diff.sum(axis=1), 0.0)  # each row's shares still add up to 100%
    assert compare.confusion_difference(a, b, normalise=False)[2, 0] == 1
    deltas = compare.class_accuracy_deltas({"A": a, "B": b}, "A")
    assert list(deltas.columns) == ["B"] and list(deltas.index) == ["neutral", "happy", "sad"]
    assert deltas["B"].tolist() == pytest.approx([10.0, 30.0, -10.0])
    with pytest.raises(ValueError, match="different classes"):
        compare.confusion_difference(a, _result([[1, 0, 0]] * 3, names=("a", "b", "c")))


def test_accuracy_vs_swept_averages_over_seeds():
    runs, evals = [], []
    for i, (lr, seed, acc) in enumerate([(0.1, 0, 0.5), (0.1, 1, 0.7), (0.01, 0, 0.8), (0.01, 1, 0.9)]):
        runs.append({"run_id": f"r{i}", "tags": {"train.optimizer.lr": lr, "seed": seed}})
        evals.append({"test/all": {"accuracy": acc}, "test/pose30": {"accuracy": acc / 2}, "val/all": {"accuracy": 1}})
    frame = compare.sweep_frame(runs, evals)
    assert list(frame.columns) == ["run_id", "train.optimizer.lr", "seed", "subset", "value"] and len(frame) == 8
    assert compare.default_sweep_axis(frame, ["train.optimizer.lr", "seed"]) == "train.optimizer.lr"
    agg = compare.accuracy_vs_swept(frame, "train.optimizer.lr")
    all_ = agg[agg["subset"] == "all"]
    assert all_["x"].tolist() == [0.01, 0.1]  # numeric order
    assert all_["mean"].tolist() == pytest.approx([0.85, 0.6])
    assert all_["min"].tolist() == pytest.approx([0.8, 0.5]) and all_["max"].tolist() == pytest.approx([0.9, 0.7])
    assert all_["n"].tolist() == [2, 2] and agg["subset"].iloc[0] == "all"


# --------------------------------------------------------------------------------------------- drill-down
def test_cell_samples_sort_mistakes_by_confidence_and_hits_the_other_way():
    preds = pd.DataFrame({"index": range(6), "label": [1, 1, 1, 1, 0, 1], "pred": [2, 2, 1, 1, 2, 2],
                          "confidence": [0.6, 0.9, 0.4, 0.8, 0.99, 0.7]})
    assert compare.cell_samples(preds, 1, 2)["index"].tolist() == [1, 5, 0]
    assert compare.cell_samples(preds, 1, 1)["index"].tolist() == [2, 3]
    assert compare.cell_samples(preds, 2, 2).empty
    assert compare.top_confusion([[5, 1, 3], [0, 5, 0], [4, 0, 5]]) == (2, 0)  # first of the tied largest
    assert compare.top_confusion([[5, 0], [0, 9]]) == (1, 1)
    assert [compare.page_count(n, 12) for n in (0, 12, 13)] == [1, 1, 2]
    row = {"prob_a": 0.2, "prob_b": 0.7, "prob_c": 0.1}
    assert list(compare.probabilities(row, ["a", "b", "c"])) == ["b", "a", "c"]


def test_faces_and_gradcam_of_a_cell(finished_run: Path):
    from fer_core.predict import Predictor

    preds = io.read_predictions(finished_run, "test", "occlusion")
    ds = compare.run_dataset(finished_run, "test", "occlusion")
    assert len(ds) == len(preds) and (ds.labels == preds["label"].to_numpy()).all()
    faces = compare.face_images(ds, preds["index"][:3])
    assert faces[0].shape == (ds.image_size, ds.image_size, 3) and faces[0].dtype == np.uint8
    overlays = compare.explain_faces(Predictor.from_run(finished_run), faces, preds["pred"][:3])
    assert [o.shape for o in overlays] == [f.shape for f in faces]
    assert not np.array_equal(overlays[0], faces[0])


# --------------------------------------------------------------------------------------------- Compare page
def test_compare_page_without_runs_says_how_to_make_them(runs_root: Path):
    at = app(COMPARE_PAGE)
    assert texts(at.title) == ["Compare runs"]
    assert any("python -m fer_core sweep" in i.value for i in at.info)
    assert not at.multiselect


def test_compare_page_shows_differences_table_and_charts(runs_root: Path, finished_run: Path):
    a = copy_run(finished_run, runs_root, "20260101-100000-a-0001")
    b = copy_run(finished_run, runs_root, "20260101-110000-b-0002")
    set_config(b, **{"train.optimizer.lr": 0.01})
    at = app(COMPARE_PAGE, runs=f"{a.name},{b.name}")
    assert not at.error and not at.warning
    assert at.multiselect[0].value == [a.name, b.name]
    assert texts(at.subheader)[:4] == ["Config differences", "Metrics per test subset", "Learning curves",
                                       "Two runs in detail"]
    overview, differing, _equal, table = (d.value for d in at.dataframe[:4])
    assert overview["label"].tolist() == ["lr=0.003", "lr=0.01"]
    assert list(differing.index) == ["train.optimizer.lr"]
    assert differing.loc["train.optimizer.lr"].tolist() == ["0.003", "0.01"]
    assert list(table.columns[: len(SUBSETS)]) == SUBSETS and len(table) == 2
    accuracy = io.read_eval(finished_run)["test/all"]["accuracy"]
    assert table["all"].tolist() == pytest.approx([100 * accuracy] * 2)
    assert any("**" in c.value for c in at.code)  # the Markdown table marks the best values

    figures = charts_on(at)
    curves, conf_a, conf_b, diff, deltas = figures
    assert {t["name"] for t in curves["data"]} == {"lr=0.003", "lr=0.01"} and len(curves["data"]) == 8
    assert conf_a["data"][0]["type"] == "heatmap" and conf_b["data"][0]["type"] == "heatmap"
    assert diff["data"][0]["zmid"] == 0 and np.allclose(array(diff["data"][0]["z"]), 0)  # same weights: no change
    assert np.allclose(array(deltas["data"][0]["x"]), 0)
    assert at.query_params["runs"] == f"{a.name},{b.name}"

    at.multiselect[0].unselect(b.name).run()
    assert any("at least two" in i.value for i in at.info)


def test_compare_page_group_plots_accuracy_against_the_swept_value(runs_root: Path, finished_run: Path):
    accuracies = {(0.003, 0): 0.5, (0.003, 1): 0.7, (0.01, 0): 0.8, (0.01, 1): 0.9}
    for i, ((lr, seed), acc) in enumerate(accuracies.items()):
        run = copy_run(finished_run, runs_root, f"20260101-12000{i}-sweep-000{i}")
        set_config(run, group="lr-sweep", tags={"train.optimizer.lr": lr, "seed": seed},
                   **{"train.optimizer.lr": lr, "seed": seed})
        set_accuracy(run, {"all": acc})
    copy_run(finished_run, runs_root, "20260101-130000-other-0009")  # not in the group
    at = app(COMPARE_PAGE, group="lr-sweep")
    assert not at.error and at.selectbox[0].value == "lr-sweep"
    assert "Against the swept value" in texts(at.subheader)
    table = at.dataframe[3].value
    assert len(table) == 4 and sorted(table["all"].round(6)) == [50.0, 70.0, 80.0, 90.0]
    sweep = charts_on(at)[-1]
    lines = {t["name"]: t for t in sweep["data"]}
    assert set(SUBSETS) <= set(lines)
    line = lines["all"]
    assert array(line["x"]).tolist() == [0.003, 0.01]
    assert array(line["y"]).tolist() == pytest.approx([60.0, 85.0])  # mean over the two seeds
    assert array(line["error_y"]["array"]).tolist() == pytest.approx([10.0, 5.0])  # up to the max
    assert line["error_y"]["visible"] is True
    assert at.query_params["group"] == "lr-sweep" and "runs" not in at.query_params


# --------------------------------------------------------------------------------------------- Confusion page
def test_confusion_page_without_runs(runs_root: Path):
    at = app(CONFUSION_PAGE)
    assert any("No finished run" in i.value for i in at.info)


def test_confusion_page_shows_the_faces_of_a_picked_cell(runs_root: Path, finished_run: Path):
    run = copy_run(finished_run, runs_root, finished_run.name)
    at = app(CONFUSION_PAGE, run=run.name)
    assert not at.error and not at.warning
    result = io.read_eval(run)["test/all"]
    counts = np.asarray(result["confusion"])
    heatmap = charts_on(at)[0]["data"][0]
    assert heatmap["type"] == "heatmap" and array(heatmap["z"]).sum() == counts.sum()

    names = result["class_names"]
    true, pred = (int(i) for i in np.unravel_index(np.argmax(counts), counts.shape))  # the fullest cell
    at.selectbox(key="confusion.true").select(true).run()
    at.selectbox(key="confusion.pred").select(pred).run()
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    n = int(counts[true, pred])
    assert any(f"**{n}** of the" in m.value for m in at.markdown)
    captions = [c for image in at.image for c in image.captions]
    assert len(captions) == min(n, 12)  # the cell's faces, one page of them
    assert all(c == f"face · Grad-CAM of {names[pred]}" for c in captions)  # each with its overlay
    assert (len(at.number_input) == 1) == (n > 12)
    shown = [m.value.split(" · ")[0] for m in at.markdown if m.value.startswith("**#")]
    expected = list(compare.cell_samples(io.read_predictions(run, "test", "all"), true, pred)["index"][:12])
    by_column = [i for c in range(4) for i in expected[c::4]]  # the grid fills rows; the page tree lists columns
    assert shown == [f"**#{i}**" for i in by_column]  # in the order of cell_samples (tested above)
