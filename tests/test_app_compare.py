"""The Compare and Confusion-browser pages and the logic behind them (:mod:`fer_core.compare`).

Unit tests use small hand-made tables; the page tests use copies of the session's tiny finished run (``finished_run``)
with one config value changed, or tagged as a sweep group with known accuracies written into their ``eval/`` files,
or with their per-face predictions rewritten (arms of several seeds, compared by the paired tests of
:mod:`fer_core.stats`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from apphelpers import SUBSETS, app, array, charts_on, copy_run, texts

from fer_core import compare, io, stats

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


def set_predictions(run_dir: Path, subset: str, right: np.ndarray) -> float:
    """Rewrite which test faces of ``subset`` a run gets right (a wrong face predicts the next class), in its
    predictions CSV and, to match, in its eval JSON (accuracy and confusion); return the new accuracy."""
    preds = io.read_predictions(run_dir, "test", subset)
    result = io.read_eval(run_dir)[f"test/{subset}"]
    k = len(result["class_names"])
    labels = preds["label"].to_numpy()
    preds["pred"] = np.where(right, labels, (labels + 1) % k)
    preds["correct"] = preds["pred"] == preds["label"]
    json_path, csv_path = io.eval_paths(run_dir, "test", subset)
    io.atomic_write_text(csv_path, preds.to_csv(index=False, float_format="%.5f"))
    confusion = np.bincount(labels * k + preds["pred"].to_numpy(), minlength=k * k).reshape(k, k)
    accuracy = float(np.mean(right))
    io.atomic_write_json(json_path, {**result, "accuracy": accuracy, "confusion": confusion.tolist()})
    return accuracy


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
    assert texts(at.subheader)[:5] == ["Config differences", "Metrics per test subset",
                                       "Paired tests on the same test faces", "Learning curves", "Two runs in detail"]
    overview, differing, _equal, table = (d.value for d in at.dataframe[:4])
    assert overview["label"].tolist() == ["lr=0.003", "lr=0.01"]
    assert list(differing.index) == ["train.optimizer.lr"]
    assert differing.loc["train.optimizer.lr"].tolist() == ["0.003", "0.01"]
    assert list(table.columns[: len(SUBSETS)]) == SUBSETS and len(table) == 2
    accuracy = io.read_eval(finished_run)["test/all"]["accuracy"]
    assert table["all"].tolist() == pytest.approx([100 * accuracy] * 2)
    assert any("**" in c.value for c in at.code)  # the Markdown table marks the best values

    figures = charts_on(at)
    # then the factor charts (tests/test_factors.py)
    paired, curves, conf_a, conf_b, diff, deltas, reliability = figures[:7]
    assert reliability["layout"]["title"]["text"] == "Reliability, test/all"  # tests/test_calibration.py for more
    # one run per arm, the same weights: McNemar finds no discordant face, the difference is unmarked
    differences = at.dataframe[4].value
    assert list(differences.index) == ["lr=0.01 − lr=0.003"]
    assert set(differences.loc["lr=0.01 − lr=0.003"]) == {"+0.0 pp n.s."}
    assert {s for t in paired["data"] for s in t["marker"]["symbol"]} == {"circle-open"}
    assert any("McNemar exact: 0 faces only B gets right, 0 only A; p = 1.000" in m.value for m in at.markdown)
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
    arms = at.dataframe[3].value  # the two seeds of each learning rate are one arm
    assert list(arms.index) == ["lr=0.003", "lr=0.01"] and arms["seeds"].tolist() == [2, 2]
    assert arms["all"].tolist() == [stats.mean_ci([0.5, 0.7]).format(), stats.mean_ci([0.8, 0.9]).format()]
    per_run = at.dataframe[4].value
    assert len(per_run) == 4 and sorted(per_run["all"].round(6)) == [50.0, 70.0, 80.0, 90.0]
    sweep = next(f for f in charts_on(at) if "all" in {t.get("name") for t in f["data"]})  # (before factor charts)
    lines = {t["name"]: t for t in sweep["data"]}
    assert set(SUBSETS) <= set(lines)
    line = lines["all"]
    assert array(line["x"]).tolist() == [0.003, 0.01]
    assert array(line["y"]).tolist() == pytest.approx([60.0, 85.0])  # mean over the two seeds
    # error bars: the mean's 95% t interval (12.7 x the standard error with two seeds), drawn within 0-100%
    intervals = [stats.mean_ci([0.5, 0.7]), stats.mean_ci([0.8, 0.9])]
    assert array(line["error_y"]["array"]).tolist() == pytest.approx([100 * (min(1, c.high) - c.mean)
                                                                       for c in intervals])
    assert array(line["error_y"]["arrayminus"]).tolist() == pytest.approx([100 * (c.mean - max(0, c.low))
                                                                            for c in intervals])
    assert line["error_y"]["visible"] is True
    assert at.query_params["group"] == "lr-sweep" and "runs" not in at.query_params


# --------------------------------------------------------------------------------------------- arms of seeds
def test_group_arms_puts_runs_that_differ_only_by_seed_together():
    def config(lr, seed, name="smoke"):
        return {"name": name, "seed": seed, "group": "g", "tags": {"seed": seed},
                "train": {"optimizer": {"lr": lr}}, "data": {"options": {"seed": 0}}}

    configs = [config(0.1, 0), config(0.01, 0), config(0.1, 1, name="other"), config(0.1, 2)]
    runs = [{"run_id": f"r{i}", "path": f"/runs/r{i}", "name": c["name"], "tags": c["tags"]}
            for i, c in enumerate(configs)]
    arms = compare.group_arms(runs, configs)
    assert [(a.label, a.run_ids, a.seeds) for a in arms] == [("lr=0.1", ("r0", "r2", "r3"), (0, 1, 2)),
                                                             ("lr=0.01", ("r1",), (0,))]
    assert arms[0].n == 3 and arms[0].paths == ("/runs/r0", "/runs/r2", "/runs/r3")
    configs[2]["model"] = {"init_from": None}  # a key set to null is a key not set: the same arm
    assert [a.run_ids for a in compare.group_arms(runs, configs)] == [("r0", "r2", "r3"), ("r1",)]
    # the data set's own seed is a config key like any other: another data seed is another arm (other faces)
    configs[3]["data"]["options"]["seed"] = 1
    assert [a.run_ids for a in compare.group_arms(runs, configs)] == [("r0", "r2"), ("r1",), ("r3",)]

    evals = {"r0": {"test/all": {"accuracy": 0.5}, "test/clean": {"accuracy": 0.6}},
             "r2": {"test/all": {"accuracy": 0.6}, "test/clean": {"accuracy": 0.7}},
             "r3": {"test/all": {"accuracy": 0.7}},
             "r1": {"test/all": {"accuracy": 0.4}, "test/clean": {"accuracy": 0.45}}}
    summary = compare.arm_metrics(compare.group_arms(runs, [config(0.1, 0), config(0.01, 0), config(0.1, 1),
                                                            config(0.1, 2)]), evals)
    assert summary[["arm", "subset", "n"]].values.tolist() == [["lr=0.1", "all", 3], ["lr=0.1", "clean", 2],
                                                               ["lr=0.01", "all", 1], ["lr=0.01", "clean", 1]]
    assert summary["half_width"].iloc[0] == pytest.approx(stats.mean_ci([0.5, 0.6, 0.7]).half_width)
    table = compare.arm_table(summary)
    assert table.loc["lr=0.1"].tolist() == [3, "60.0 ± 24.8%", "65.0 ± 63.5%"]
    assert table.loc["lr=0.01"].tolist() == [1, "40.0%", "45.0%"]  # one run: no interval
    assert "| lr=0.1 | 3 | 60.0 ± 24.8% | 65.0 ± 63.5% |" in compare.text_markdown(table)


def test_an_arm_converges_when_its_seed_mean_validation_curve_gains_under_a_point_over_five_epochs():
    def rows(values):
        return [{"epoch": i + 1, "val_acc": v} for i, v in enumerate(values)] + [{"epoch": 99, "train_loss": 1.0}]

    flat = rows([0.5, 0.80, 0.81, 0.80, 0.805, 0.809, 0.8095])  # +0.95 points over the last five epochs
    rising = rows([0.5, 0.6, 0.7, 0.8, 0.82, 0.84, 0.86])
    assert compare.curve_gain([flat]) == pytest.approx(0.0095)
    # cut to the shorter curve: six epochs
    assert compare.curve_gain([flat, rising[:-2]]) == pytest.approx((0.809 + 0.84) / 2 - (0.5 + 0.5) / 2)
    assert compare.curve_gain([rows([0.5, 0.6, 0.7, 0.8, 0.9])]) is None  # five values: no five-epoch gain yet
    arms = [compare.Arm("flat", ("f0", "f1"), ("/f0", "/f1"), (0, 1)), compare.Arm("rising", ("r0",), ("/r0",), (0,)),
            compare.Arm("short", ("s0",), ("/s0",), (0,))]
    found = compare.arm_convergence(arms, {"f0": flat, "f1": flat, "r0": rising, "s0": rows([0.5, 0.6])})
    assert found[["arm", "seeds", "epochs", "converged"]].values.tolist() == [
        ["flat", 2, 7, True], ["rising", 1, 7, False], ["short", 1, 2, None]]
    assert found["text"].tolist() == ["+0.9 points: converged", "+26.0 points: still rising", "–"]


def test_arm_comparisons_test_each_subset_and_refuse_other_faces():
    labels = np.arange(60) % 7

    def table(right):
        pred = np.where(right, labels, (labels + 1) % 7)
        return pd.DataFrame({"index": range(60), "label": labels, "pred": pred})

    good, bad = np.arange(60) < 55, np.arange(60) < 20
    tables = {("/a0", "all"): table(bad), ("/a1", "all"): table(bad), ("/b0", "all"): table(good),
              ("/a0", "clean"): table(bad), ("/b0", "clean"): table(bad),
              ("/c0", "all"): table(good).iloc[:50]}
    found = compare.arm_comparisons({"A": ["/a0", "/a1"], "B": ["/b0"], "C": ["/c0"]}, subsets=["all"],
                                    read=lambda d, split, subset: tables[(str(d), subset)])
    assert found[["a", "b"]].values.tolist() == [["A", "B"], ["A", "C"], ["B", "C"]]
    ab = found.iloc[0]
    assert ab["test"] == stats.BOOTSTRAP and ab["difference"] == pytest.approx(35 / 60) and ab["supported"]
    assert ab["verdict"] == stats.REPRODUCED and ab["low"] > 0
    assert compare.format_difference(ab).startswith("+58.3 pp ▲ p < 0.001")
    assert found.iloc[1]["error"] and "50 faces against 60" in found.iloc[1]["error"]
    assert not found.iloc[1]["supported"] and compare.format_difference(found.iloc[1]) == "not paired"

    one = compare.arm_comparisons({"A": ["/a0"], "B": ["/b0"]}, subsets=["clean"],
                                  read=lambda d, split, subset: tables[(str(d), subset)]).iloc[0]
    assert one["test"] == stats.MCNEMAR and (one["only_a"], one["only_b"]) == (0, 0) and one["p_value"] == 1.0
    assert compare.format_difference(one) == "+0.0 pp n.s."
    text, marked = compare.difference_table(found)
    assert text.loc["B − A", "all"].startswith("+58.3 pp ▲") and marked.loc["B − A", "all"]
    assert text.loc["C − A", "all"] == "not paired" and not marked.loc["C − A", "all"]
    details = compare.comparison_details(found)
    assert details.loc[0, "verdict on B > A"] == "reproduced" and details.loc[0, "seeds A / B"] == "2 / 1"


def test_compare_page_groups_seeds_into_arms_and_marks_only_supported_differences(runs_root: Path,
                                                                                  finished_run: Path):
    """Two arms of two seeds each, with real prediction files: on all test faces arm b is far better (marked, with
    its p-value), on the occlusion faces it gets one more face right (n.s.), elsewhere the runs are identical."""
    rng = np.random.default_rng(0)
    n_all = len(io.read_predictions(finished_run, "test", "all"))
    occlusion = rng.random(len(io.read_predictions(finished_run, "test", "occlusion"))) < 0.5
    accuracy = {}
    for i, (variant, lr, seed) in enumerate([("a", 0.003, 0), ("a", 0.003, 1), ("b", 0.01, 0), ("b", 0.01, 1)]):
        run = copy_run(finished_run, runs_root, f"20260102-10000{i}-arm-000{i}")
        set_config(run, group="arms", tags={"variant": variant, "seed": seed}, seed=seed,
                   **{"train.optimizer.lr": lr})
        accuracy[(variant, seed)] = set_predictions(run, "all", rng.random(n_all) < (0.3 if variant == "a" else 0.9))
        right = occlusion.copy()
        if variant == "b":
            right[np.flatnonzero(~occlusion)[0]] = True  # one face more than arm a
        set_predictions(run, "occlusion", right)
        curve = [0.5, 0.7, 0.8, 0.8, 0.8, 0.805, 0.81, 0.805] if variant == "a" else [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
        (run / "metrics.jsonl").write_text("".join(
            json.dumps({"epoch": e, "train_loss": 1.0, "val_acc": v + 0.002 * seed}) + "\n"
            for e, v in enumerate(curve, start=1)))
    at = app(COMPARE_PAGE, group="arms")
    assert not at.error and not at.warning, [w.value for w in at.warning]

    overview, _differing, _equal, arms, per_run, differences, details = (d.value for d in at.dataframe[:7])
    assert overview["arm"].tolist() == ["a", "a", "b", "b"]
    assert list(arms.index) == ["a", "b"] and arms["seeds"].tolist() == [2, 2]
    for variant in "ab":
        expected = stats.mean_ci([accuracy[(variant, 0)], accuracy[(variant, 1)]])
        assert arms.loc[variant, "all"] == expected.format() and "±" in expected.format()
    assert len(per_run) == 4

    assert list(differences.index) == ["b − a"]
    marked = differences.loc["b − a", "all"]
    assert "▲" in marked and "p < 0.001" in marked  # far better on every test face: marked with its p-value
    assert differences.loc["b − a", "occlusion"] == f"+{100 / len(occlusion):.1f} pp n.s."  # one face: unmarked
    assert differences.loc["b − a", "clean"] == "+0.0 pp n.s."
    rows = details.set_index("subset")
    assert rows.loc["all", "test"] == stats.BOOTSTRAP and rows.loc["all", "seeds A / B"] == "2 / 2"
    assert rows.loc["all", "supported"] and rows.loc["all", "verdict on B > A"] == stats.REPRODUCED
    assert not rows.loc["occlusion", "supported"] and rows.loc["occlusion", "verdict on B > A"] == stats.INCONCLUSIVE
    assert any(f"**{marked}**" in c.value and "n.s." in c.value for c in at.code)  # Markdown: only the marked bold

    convergence = at.dataframe[7].value.set_index("arm")
    assert convergence.loc["a", "epochs"] == 8 and convergence.loc["b", "epochs"] == 7
    assert convergence.loc["a", "validation gain, last 5 epochs"] == "+0.5 points: converged"
    assert convergence.loc["b", "validation gain, last 5 epochs"] == "+50.0 points: still rising"
    assert any("Still rising: b;" in c.value for c in at.caption)

    bars, paired = charts_on(at)[:2]
    assert [(t["type"], t["name"]) for t in bars["data"]] == [("bar", "a"), ("bar", "b")]
    assert all(t["error_y"]["visible"] for t in bars["data"])  # the 95% intervals over the seeds
    assert len(paired["data"]) == 1 and paired["data"][0]["name"] == "b − a"
    paired = paired["data"][0]
    symbols = dict(zip(paired["x"], paired["marker"]["symbol"], strict=True))
    assert symbols["all"] == "circle" and symbols["occlusion"] == "circle-open"


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
