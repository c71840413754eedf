"""Compare runs: two to six finished runs, or a whole sweep or ablation group, side by side.

What differs in their configs, a metrics table per test subset like a paper's ablation table, overlaid learning
curves, two runs' confusion matrices with their difference, per-class accuracy changes, calibration (ECE beside
accuracy, overlaid reliability diagrams, before or after temperature scaling), and for a group the metric
against the swept value (for a search, ``python -m fer_core search``, the objective per trial and the parameters'
importance). Runs that differ only by seed are one arm (mean over seeds with its 95% interval), and a
difference between arms is marked only where a paired test on the same test faces supports it
(:mod:`fer_core.stats`). ``/compare?runs=a,b`` or ``/compare?group=g`` opens a given comparison; the widgets keep the
query parameters in step, so the URL can be shared.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app import charts, ui
from fer_core import compare, io, search

MODE_KEY = "compare.mode"
RUNS_KEY = "compare.runs"
GROUP_KEY = "compare.group"
SYNCED_KEY = "compare.synced_query"  # the (group, runs) query this page last wrote
METRIC_KEY = "compare.metric"
A_KEY, B_KEY = "compare.a", "compare.b"
PAIR_SUBSET_KEY = "compare.pair_subset"
NORMALISE_KEY = "compare.normalise"
SWEEP_X_KEY = "compare.sweep_x"
REFERENCE_KEY = "compare.reference"

MODES = ("Runs", "Sweep or ablation group")
MARK = "font-weight: 700; background-color: rgba(42, 157, 143, 0.18)"  # a best value, a supported difference
MAX_RUNS = 6
METRICS = {"accuracy": "accuracy", "mean class accuracy": "mean_class_accuracy", "macro F1": "macro_f1"}
SWEEP_EXAMPLE = ("python -m fer_core sweep --config configs/smoke.yaml "
                 "--grid train.optimizer.lr=0.01,0.003 --grid seed=0,1 --parallel 2")

root = io.runs_dir()
runs, _skipped = ui.load_runs(root)
st.title("Compare runs")

# Runs that can be compared: done, with test results.
finished = [r for r in runs if r["state"] == "done" and r.get("test_acc") is not None]
if len(finished) < 2:
    have = "no finished run" if not finished else "one finished run"
    st.info(
        f"Comparing needs at least two finished runs with test results; `{root}` has {have}. "
        "Train a small sweep from a shell (each point is a run, tied together by a group you can compare here):\n\n"
        f"`{SWEEP_EXAMPLE}`\n\nor start runs one by one on the Train page or with "
        "`python -m fer_core train --config configs/smoke.yaml --set train.optimizer.lr=0.01`.",
        icon=":material/compare:",
    )
    st.page_link(ui.HOME_PAGE, label="Home", icon=":material/home:")
    st.stop()

by_id = {r["run_id"]: r for r in finished}
groups: dict[str, list[dict]] = {}
for r in finished:
    if r.get("group"):
        groups.setdefault(r["group"], []).append(r)
groups = {g: members for g, members in groups.items() if len(members) >= 2}


# --------------------------------------------------------------------------------------------- what to compare
def _from_query() -> None:
    """Apply ``?group=`` / ``?runs=`` to the widgets when they changed since this page last wrote them."""
    group, wanted = st.query_params.get("group"), st.query_params.get("runs")
    if (group, wanted) == st.session_state.get(SYNCED_KEY):
        return
    if group:
        if group in groups:
            st.session_state[MODE_KEY], st.session_state[GROUP_KEY] = MODES[1], group
            return
        st.warning(f"There is no group `{group}` with two or more finished runs in `{root}`.")
    if wanted:
        ids = [i for i in dict.fromkeys(wanted.split(",")) if i]
        missing = [i for i in ids if i not in by_id]
        if missing:
            st.warning(f"Not finished or not in `{root}`, left out: {', '.join(f'`{i}`' for i in missing)}.")
        st.session_state[MODE_KEY] = MODES[0]
        st.session_state[RUNS_KEY] = [i for i in ids if i in by_id][:MAX_RUNS]


_from_query()
st.session_state.setdefault(MODE_KEY, MODES[0])
if st.session_state[MODE_KEY] == MODES[1] and not groups:
    st.session_state[MODE_KEY] = MODES[0]
if not [i for i in st.session_state.get(RUNS_KEY, []) if i in by_id]:
    st.session_state[RUNS_KEY] = [r["run_id"] for r in finished[:2]]  # the two newest
else:
    st.session_state[RUNS_KEY] = [i for i in st.session_state[RUNS_KEY] if i in by_id]
if st.session_state.get(GROUP_KEY) not in groups and groups:
    st.session_state[GROUP_KEY] = next(iter(groups))

if groups:
    mode = st.segmented_control("Compare", MODES, key=MODE_KEY, label_visibility="collapsed") or MODES[0]
else:
    mode = MODES[0]
    st.caption(f"No sweep or ablation group has two finished runs yet; make one with `{SWEEP_EXAMPLE}`.")

if mode == MODES[1]:
    group = st.selectbox("Sweep or ablation group", list(groups), key=GROUP_KEY,
                         format_func=lambda g: f"{g}  ·  {len(groups[g])} finished runs")
    chosen = sorted(groups[group], key=lambda r: (r.get("created") or 0, r["run_id"]))
    st.query_params.pop("runs", None)
    st.query_params["group"] = group
    st.session_state[SYNCED_KEY] = (group, None)
else:
    group = None
    ids = st.multiselect(f"Runs to compare (two to {MAX_RUNS})", list(by_id), key=RUNS_KEY,
                         max_selections=MAX_RUNS, format_func=lambda i: ui.run_label(by_id[i]),
                         placeholder="Pick finished runs")
    chosen = [by_id[i] for i in ids]
    st.query_params.pop("group", None)
    st.query_params["runs"] = ",".join(ids)
    st.session_state[SYNCED_KEY] = (None, ",".join(ids))
    if len(chosen) < 2:
        st.info("Pick at least two runs to compare.")
        st.stop()

configs = [ui.load_config(r["path"]) for r in chosen]
labels = compare.short_labels(chosen, configs)
evals = {label: ui.load_eval(r["path"]) for label, r in zip(labels, chosen, strict=True)}
colors = charts.run_colors(labels)
arms = compare.group_arms(chosen, configs)  # runs that differ only by seed are one arm
arm_of = {run_id: arm.label for arm in arms for run_id in arm.run_ids}
grouped = len(arms) < len(chosen)
arm_colors = charts.run_colors([arm.label for arm in arms])


@st.cache_data(show_spinner="Paired tests on the same test faces…", max_entries=32)
def _paired_tests(arm_dirs: dict[str, tuple[str, ...]], pairs: tuple[tuple[str, str], ...], stamps: tuple,
                  subsets: tuple[str, ...] | None = None, split: str = "test") -> pd.DataFrame:
    """``compare.arm_comparisons``, cached until a run's ``eval/`` files change (``stamps``)."""
    del stamps
    return compare.arm_comparisons(arm_dirs, pairs=list(pairs), subsets=subsets, split=split)


def _stamps(paths: list[str]) -> tuple:
    return tuple(ui.folder_stamp(Path(p) / "eval") for p in paths)


overview = pd.DataFrame({
    "label": labels,
    **({"arm": [arm_of[r["run_id"]] for r in chosen]} if grouped else {}),
    "run": [ui.run_link(r["run_id"]) for r in chosen],
    "model": [r.get("model") or "" for r in chosen],
    "data": [r.get("dataset") or "" for r in chosen],
    "epochs": [str(r.get("epoch") or "") for r in chosen],
})
st.dataframe(
    overview, hide_index=True, width="stretch",
    column_config={"run": st.column_config.LinkColumn("run", display_text=r"run\?run=(.*)",
                                                      help="Open the run's page"),
                   "label": st.column_config.TextColumn("label", help="how the charts below name the run"),
                   "arm": st.column_config.TextColumn("arm", help="runs whose configs differ only by seed")},
)
if grouped:
    st.caption(f"{len(chosen)} runs in {len(arms)} arms: runs whose configs differ only by `seed` are repeats of one "
               "configuration, summarised below by their mean and its 95% confidence interval.")

# --------------------------------------------------------------------------------------------- config differences
st.subheader("Config differences")
differing, equal = compare.config_differences(dict(zip(labels, configs, strict=True)))
if differing.empty:
    st.info("The configs are the same (apart from the runs' names and tags): any difference comes from chance.")
else:
    reference = differing.columns[0]

    def _highlight(row: pd.Series) -> list[str]:
        return ["" if v == row[reference] else "background-color: rgba(232, 113, 10, 0.22); font-weight: 600"
                for v in row]

    st.dataframe(differing.style.apply(_highlight, axis=1), width="stretch")
    st.caption(f"Only the keys that differ; a highlighted value differs from the first run's ({reference}).")
with st.expander(f"{len(equal)} keys are the same in every run"):
    st.dataframe(equal, hide_index=True, width="stretch")

# --------------------------------------------------------------------------------------------- metrics table
st.subheader("Metrics per test subset")
st.session_state.setdefault(METRIC_KEY, "accuracy")
metric_name = st.segmented_control("Metric", list(METRICS), key=METRIC_KEY) or "accuracy"
metric = METRICS[metric_name]
table = compare.metrics_table(evals, metric=metric)
if table.empty or table.isna().all().all():
    st.info("These runs have no test results; evaluate them with `python -m fer_core evaluate <run id>`.")
else:
    table = table[ui.ordered_subsets(table.columns)]
    best = compare.best_per_column(table)

    def _bold(column: pd.Series) -> list[str]:
        return [MARK if i in best.get(column.name, ()) else "" for i in column.index]

    shown = (100.0 * table).style.apply(_bold, axis=0).format("{:.1f}%", na_rep="–")
    if grouped:
        summary = compare.arm_metrics(arms, {r["run_id"]: evals[label] for label, r in zip(labels, chosen,
                                                                                          strict=True)}, metric=metric)
        subsets = ui.ordered_subsets(summary["subset"].unique())
        arm_table = compare.arm_table(summary)[["seeds", *subsets]]
        st.dataframe(arm_table, width="stretch")
        st.caption(f"One row per arm. Test {metric_name}: mean over the arm's seeds ± half-width of its 95% "
                   "confidence interval (Student t; an arm with one run has none). Whether two arms differ is "
                   "tested below on the same test faces.")
        st.plotly_chart(charts.arm_bars(summary, arm_colors, subsets=subsets, y_title=f"test {metric_name} (%)"),
                        width="stretch", key="compare.arms")
        with st.expander(f"Per run ({len(chosen)} runs)"):
            st.dataframe(shown, width="stretch")
            st.caption("The highest value of each column in bold (a ranking, not a tested difference).")
        with st.expander("As a Markdown table"):
            st.code(compare.text_markdown(arm_table), language="markdown")
    else:
        st.dataframe(shown, width="stretch")
        st.caption(f"Test {metric_name} per subset (all test faces, then the challenge subsets); the best of each "
                   "column in bold (a ranking: whether a difference is real is tested below).")
        with st.expander("As a Markdown table"):
            st.code(compare.markdown_table(table, best), language="markdown")

# --------------------------------------------------------------------------------------------- paired tests
if len(arms) >= 2:
    st.subheader("Paired tests on the same test faces")
    arm_labels = [arm.label for arm in arms]
    if st.session_state.get(REFERENCE_KEY) not in arm_labels:
        st.session_state[REFERENCE_KEY] = arm_labels[0]
    reference = (st.selectbox("Reference arm A (every other arm is a B)", arm_labels, key=REFERENCE_KEY)
                 if len(arms) > 2 else arm_labels[0])
    arm_dirs = {arm.label: arm.paths for arm in arms}
    pairs = tuple((reference, other) for other in arm_labels if other != reference)
    tests = _paired_tests(arm_dirs, pairs, _stamps([p for arm in arms for p in arm.paths]))
    text, marked = compare.difference_table(tests)
    order = ui.ordered_subsets(text.columns)
    text, marked = text[order], marked[order]
    st.dataframe(text.style.apply(lambda col: [MARK if m else "" for m in marked[col.name]], axis=0),
                 width="stretch")
    st.caption(f"Test accuracy of each arm B minus arm A ({reference}) on the same test faces, in percentage points. "
               "Marked (bold, ▲ or ▼ with the p-value) only where the paired test supports the difference: p < 0.05 "
               "and the 95% interval of B − A excludes 0; otherwise n.s. One run per arm: exact McNemar test; "
               "several seeds: paired bootstrap over the faces and the arms' seeds.")
    for (a_, b_), rows in tests[tests["error"].notna()].groupby(["a", "b"], sort=False):
        st.warning(f"{b_} − {a_} could not be paired on {', '.join(rows['subset'])}: {rows['error'].iloc[0]}")
    if tests["difference"].notna().any():
        st.plotly_chart(charts.paired_differences(tests, arm_colors, subsets=order), width="stretch",
                        key="compare.paired")
    with st.expander("Details: intervals, p-values and verdicts"):
        st.dataframe(compare.comparison_details(tests), hide_index=True, width="stretch")
        st.caption("Verdict on the claim \"B beats A\": reproduced (the test supports B > A and the interval lies "
                   "above 0), not reproduced (the interval lies at or below 0, or the test supports A > B), else "
                   "inconclusive.")
        st.code(compare.text_markdown(text, marked), language="markdown")

# --------------------------------------------------------------------------------------------- learning curves
st.subheader("Learning curves")
metrics = {label: ui.load_metrics(r["path"]) for label, r in zip(labels, chosen, strict=True)}
if any(metrics.values()):
    st.plotly_chart(charts.overlaid_curves({k: v for k, v in metrics.items() if v}, colors), width="stretch",
                    key="compare.curves")
    by_run = {r["run_id"]: metrics[label] for label, r in zip(labels, chosen, strict=True)}
    convergence = compare.arm_convergence(arms, by_run)
    st.dataframe(convergence[["arm", "seeds", "epochs", "text"]].rename(
        columns={"text": f"validation gain, last {compare.CONVERGENCE_EPOCHS} epochs"}), hide_index=True,
        width="stretch")
    rising = convergence.loc[convergence["converged"].eq(False), "arm"].tolist()
    st.caption(f"Validation accuracy averaged over each arm's seeds: an arm has converged when it gained under "
               f"{100 * compare.CONVERGENCE_GAIN:.0f} point over its last {compare.CONVERGENCE_EPOCHS} epochs. "
               + (f"Still rising: {', '.join(rising)}; a longer schedule may change the comparison above."
                  if rising else "Every arm with enough epochs has converged."))
else:
    st.info("None of these runs has a metrics.jsonl with finished epochs.")

# --------------------------------------------------------------------------------------------- a pair of runs
st.subheader("Two runs in detail")
if st.session_state.get(A_KEY) not in labels:
    st.session_state[A_KEY] = labels[0]
if st.session_state.get(B_KEY) not in labels:  # a run of another arm than A's when there is one
    arm_by_label = {label: arm_of[r["run_id"]] for label, r in zip(labels, chosen, strict=True)}
    others = [label for label in labels if arm_by_label[label] != arm_by_label[st.session_state[A_KEY]]]
    st.session_state[B_KEY] = others[0] if others else labels[1]
left, mid, right = st.columns([2, 2, 2])
a = left.selectbox("Run A (the reference)", labels, key=A_KEY)
b = mid.selectbox("Run B", labels, key=B_KEY)
pair_keys = ui.ordered_eval_keys(set(evals[a]) & set(evals[b]))
if not pair_keys:
    st.info(f"{a} and {b} have no evaluated split and subset in common.")
    st.stop()
if st.session_state.get(PAIR_SUBSET_KEY) not in pair_keys:
    st.session_state[PAIR_SUBSET_KEY] = pair_keys[0]
key = right.selectbox("Split / subset", pair_keys, key=PAIR_SUBSET_KEY)
st.session_state.setdefault(NORMALISE_KEY, True)
normalise = st.toggle("Normalise rows (share of each true class)", key=NORMALISE_KEY)
result_a, result_b = evals[a][key], evals[b][key]
col_a, col_b = st.columns(2)
for col, label, result in ((col_a, "A", result_a), (col_b, "B", result_b)):
    name = a if label == "A" else b
    fig = charts.confusion_matrix(result["confusion"], result["class_names"], normalise=normalise,
                                  title=f"{label}: {name} ({ui.pct(result.get('accuracy')) or 0:.1f}%)")
    col.plotly_chart(fig, width="stretch", key=f"compare.confusion.{label}")
col_diff, col_delta = st.columns(2)
try:
    diff = compare.confusion_difference(result_a, result_b, normalise=normalise)
except ValueError as err:
    col_diff.error(str(err))
else:
    col_diff.plotly_chart(charts.confusion_difference(diff, result_a["class_names"], normalised=normalise,
                                                          title="Difference B − A"),
                          width="stretch", key="compare.difference")
    col_diff.caption("Red: B puts more faces in the cell than A; blue: fewer. On the diagonal, red is better.")
if a == b:
    col_delta.info("Pick a run B different from A to see per-class changes.")
else:
    deltas = compare.class_accuracy_deltas({a: result_a, b: result_b}, reference=a)
    col_delta.markdown(f"**Per-class accuracy, B − A** ({key})")
    col_delta.plotly_chart(charts.class_deltas(deltas, colors, reference="A"), width="stretch",
                           key="compare.deltas")
    col_delta.caption(f"Recall of {b} on each class minus {a}'s, in percentage points (green: B is better).")
    split, _, subset = key.partition("/")
    paths = {label: r["path"] for label, r in zip(labels, chosen, strict=True)}
    pair = _paired_tests({a: (paths[a],), b: (paths[b],)}, ((a, b),), _stamps([paths[a], paths[b]]),
                         subsets=(subset,), split=split).iloc[0]
    if pair["error"]:
        st.warning(f"No paired test: {pair['error']}")
    else:
        cell = compare.format_difference(pair)
        st.markdown(f"Accuracy B − A on these {int(pair['n_faces'])} faces: "
                    + (f"**{cell}**" if pair["supported"] else cell)
                    + f" · {pair['test']}: {int(pair['only_b'])} faces only B gets right, {int(pair['only_a'])} only "
                    f"A; {compare.format_p(pair['p_value'])}.")

# --------------------------------------------------------------------------------------------- calibration
CALIBRATION_SUBSET_KEY = "compare.calibration_subset"
CALIBRATED_KEY = "compare.calibrated"


def _calibration_section() -> None:
    """ECE beside accuracy for one split/subset of every run, and their reliability diagrams overlaid."""
    st.subheader("Calibration")
    shared = ui.ordered_eval_keys(set.intersection(*(set(e) for e in evals.values())))
    if not shared:
        st.info("These runs have no evaluated split and subset in common.")
        return
    if st.session_state.get(CALIBRATION_SUBSET_KEY) not in shared:
        st.session_state[CALIBRATION_SUBSET_KEY] = shared[0]
    left, right = st.columns([2, 3])
    key = left.selectbox("Split / subset", shared, key=CALIBRATION_SUBSET_KEY)
    table = compare.calibration_table(evals, key)
    has_temperature = bool(table["temperature"].notna().any())
    st.session_state.setdefault(CALIBRATED_KEY, False)
    calibrated = right.toggle("After temperature scaling", key=CALIBRATED_KEY, disabled=not has_temperature,
                              help="Each run's probabilities with its logits divided by its temperature (fitted on "
                                   "its validation split; python -m fer_core calibrate RUN)")
    shown = table.copy()
    for column in ("accuracy", "ece", "ece_adaptive", "ece_calibrated"):
        shown[column] = 100.0 * shown[column]
    st.dataframe(shown, width="stretch", placeholder=ui.MISSING, column_config={
        "accuracy": st.column_config.NumberColumn("accuracy", format="%.1f%%"),
        "ece": st.column_config.NumberColumn("ECE", format="%.1f%%", help="expected calibration error, 15 "
                                             "equal-width confidence bins; lower is better"),
        "ece_adaptive": st.column_config.NumberColumn("ECE (adaptive bins)", format="%.1f%%",
                                                      help="15 bins holding equally many faces"),
        "nll": st.column_config.NumberColumn("NLL", format="%.3f"),
        "brier": st.column_config.NumberColumn("Brier", format="%.3f", help="multiclass, 0 (perfect) to 2"),
        "temperature": st.column_config.NumberColumn("T", format="%.3f", help="the run's temperature"),
        "ece_calibrated": st.column_config.NumberColumn("ECE after T", format="%.1f%%"),
        "nll_calibrated": st.column_config.NumberColumn("NLL after T", format="%.3f"),
    })
    curves: dict[str, dict | None] = {}
    for label in labels:
        result = evals[label][key]
        scaled = result.get("calibrated") or {}
        curves[label] = scaled.get("reliability") if calibrated else result.get("reliability")
    missing = [label for label, curve in curves.items() if not curve]
    if len(missing) == len(curves):
        st.info(f"No reliability data for {key}" + (" after temperature scaling" if calibrated else "")
                + ": evaluate the runs again (`python -m fer_core evaluate <run id>`) or fit their temperature "
                "(`python -m fer_core calibrate <run id>`).")
        return
    st.plotly_chart(charts.reliability_diagram(curves, colors, bars=False,
                                               title=f"Reliability, {key}" + (" (after T)" if calibrated else "")),
                    width="stretch", key="compare.reliability")
    st.caption("Accuracy against mean confidence per confidence bin (marker size: faces in the bin); the dashed "
               "diagonal is perfect calibration, a point below it over-confidence."
               + (f" Not shown (no data): {', '.join(missing)}." if missing else ""))


_calibration_section()

# --------------------------------------------------------------------------------------------- sweep
if group is not None:
    st.subheader("Against the swept value")
    tags = [r.get("tags") or {} for r in chosen]
    keys = compare.swept_keys(tags)
    axes = [k for k in keys if k != compare.SEED_KEY]
    if not axes:
        st.info(f"The runs of `{group}` do not differ in a swept value (their config tags are "
                f"{'the same' if tags[0] else 'empty'}), so there is nothing to plot against.")
    else:
        frame = compare.sweep_frame(chosen, [evals[label] for label in labels], keys, metric=metric)
        default = compare.default_sweep_axis(frame, keys)
        if st.session_state.get(SWEEP_X_KEY) not in axes:
            st.session_state[SWEEP_X_KEY] = default
        x = st.selectbox("Swept value on the x axis", axes, key=SWEEP_X_KEY) if len(axes) > 1 else axes[0]
        facet = [k for k in axes if k != x]
        agg = compare.accuracy_vs_swept(frame, x, by=facet)
        numeric = compare.is_numeric(frame[x].dropna()) and frame[x].notna().all()
        st.plotly_chart(charts.sweep_lines_ci(agg, x_title=x, y_title=f"test {metric_name} (%)", numeric=numeric,
                                              facet=facet),
                        width="stretch", key="compare.sweep")
        panels = f"; one panel per {', '.join(facet)}" if facet else ""
        repeats = ("Each value is the mean over seeds; the error bars are its 95% confidence interval (Student t, "
                   "drawn within 0-100%)." if compare.SEED_KEY in keys else "One run per value (no seed was swept).")
        st.caption(f"One {'line' if numeric else 'bar'} per test subset{panels}. {repeats}")


# --------------------------------------------------------------------------------------------- search
@st.cache_data(show_spinner="Reading the search…", max_entries=8)
def _search(group: str, root: str, stamp: float) -> dict | None:
    """``search.search_summary``, cached until the study's journal changes (``stamp``)."""
    return search.search_summary(group, root)


if group is not None:
    study_file = search.search_folder(group, root) / "study.log"
    found = _search(group, str(root), study_file.stat().st_mtime) if study_file.exists() else None
    if found:
        st.subheader("Search")
        counts = pd.Series([t["state"] for t in found["trials"]]).value_counts()
        st.caption(f"`{group}` is an Optuna search (`python -m fer_core search`): {len(found['trials'])} trials, "
                   + ", ".join(f"{n} {state}" for state, n in counts.items())
                   + f"; objective: the {search.OBJECTIVE}. A pruned trial's point is the best it reached before "
                   "the pruner stopped it.")
        st.plotly_chart(charts.search_trials(found["trials"], objective=search.OBJECTIVE), width="stretch",
                        key="compare.search")
        if found["importance"]:
            st.plotly_chart(charts.param_importance(found["importance"]), width="stretch",
                            key="compare.importance")
        else:
            st.caption("Parameter importance needs two or more complete trials whose objectives differ.")
        table = pd.DataFrame(found["trials"]).rename(columns={"value": "best val acc"})
        st.dataframe(table, hide_index=True, width="stretch")


# --------------------------------------------------------------------------------------------- robustness
COMPARE_FACTOR_KEY = "compare.factor"
COMPARE_FACTORS = ("yaw", "intensity", "occluder")


@st.cache_data(show_spinner=False, max_entries=64)
def _factors(path: str, stamp: tuple) -> dict | None:
    """``fer_core.factors.read_factors`` of a run's test split, cached until the file changes (``stamp``)."""
    from fer_core.factors import read_factors

    del stamp
    return read_factors(path, "test")


def _robustness_section() -> None:
    """Accuracy against yaw, intensity and occluder (and any other SynthFACS factor) for the chosen runs at once."""
    from fer_core.factors import FACTORS, factor_frame, factors_paths

    found = {label: _factors(r["path"], ui.file_stamp(factors_paths(r["path"], "test")[0]))
             for label, r in zip(labels, chosen, strict=True)}
    found = {label: result for label, result in found.items() if result}
    if not found:
        return
    st.subheader("Robustness over SynthFACS's factors")
    missing = [label for label in labels if label not in found]
    st.caption("Test accuracy per bin of each factor, with 95% Wilson intervals (each bin's faces are the same for "
               "runs on the same SynthFACS test split)."
               + (f" No factor accuracies for {', '.join(missing)} (not SynthFACS, or evaluated before they "
                  "existed)." if missing else ""))
    others = [f for f in FACTORS if f not in COMPARE_FACTORS]
    if st.session_state.get(COMPARE_FACTOR_KEY) not in others:
        st.session_state[COMPARE_FACTOR_KEY] = others[0]
    for name in COMPARE_FACTORS:
        numeric = FACTORS[name].numeric
        st.plotly_chart(charts.factor_accuracy(factor_frame(found, name), x_title=FACTORS[name].title,
                                               numeric=numeric, colors=colors),
                        width="stretch", key=f"compare.factor.{name}")
    other = st.selectbox("Another factor", others, key=COMPARE_FACTOR_KEY, format_func=lambda f: FACTORS[f].title)
    st.plotly_chart(charts.factor_accuracy(factor_frame(found, other), x_title=FACTORS[other].title,
                                           numeric=FACTORS[other].numeric, colors=colors),
                    width="stretch", key="compare.factor.other")


_robustness_section()
