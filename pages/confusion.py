"""Confusion browser: from a cell of a run's confusion matrix to the faces behind it, with Grad-CAM.

Pick a run and a test subset; click a cell of the matrix (or pick the true and predicted class below it) to see its
faces, most confident mistakes first (on the diagonal, the least confident right answers first), each with the
model's probabilities and a Grad-CAM overlay of the predicted class. The faces are rebuilt from the run's config
(the predictions CSV names them by position in the data set) and the model is the run's best checkpoint.
``/confusion?run=<run_id>`` opens a given run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from app import charts, pickers, ui
from fer_core import compare, io
from fer_core.explain import render
from fer_core.runs import weights_path

RUN_KEY = "confusion.run"
SUBSET_KEY = "confusion.subset"
NORMALISE_KEY = "confusion.normalise"
TRUE_KEY, PRED_KEY = "confusion.true", "confusion.pred"
PICKED_KEY = "confusion.picked"  # {chart key: (true, pred)} of the last chart selection applied to the select boxes
CELL_KEY = "confusion.cell"  # (run, subset, true, pred) the page number belongs to
PAGE_KEY = "confusion.page"
PER_PAGE = 12
COLUMNS = 4
FACE_PIXELS = 112  # faces are shown at this size (fer_core.explain.render.enlarge), so 32-pixel faces stay readable


@st.cache_data(show_spinner=False, max_entries=32)
def _predictions(run_dir: str, split: str, subset: str, stamp: tuple) -> pd.DataFrame:
    return io.read_predictions(run_dir, split, subset)


@st.cache_resource(show_spinner=False, max_entries=4)
def _dataset(run_dir: str, split: str, subset: str, stamp: tuple):
    return compare.run_dataset(run_dir, split, subset)


@st.cache_data(show_spinner=False, max_entries=64)
def _overlays(run_dir: str, split: str, subset: str, indices: tuple[int, ...], targets: tuple[int, ...],
              stamp: tuple) -> list[np.ndarray]:
    faces = compare.face_images(_dataset(run_dir, split, subset, stamp[:1]), indices)
    return compare.explain_faces(pickers.load_predictor(run_dir), faces, targets, method="gradcam")


# --------------------------------------------------------------------------------------------- run and subset
root = io.runs_dir()
runs, _skipped = ui.load_runs(root)
st.title("Confusion browser")
evaluated = [r for r in runs if r["state"] == "done" and ui.load_eval(r["path"])]
if not evaluated:
    st.info(f"No finished run with evaluation results in `{root}` yet. Train one from the Home page or the Train "
            "page, or from a shell: `python -m fer_core train --config configs/smoke.yaml` (it evaluates itself "
            "when it finishes; an older run: `python -m fer_core evaluate <run id>`).")
    st.page_link(ui.HOME_PAGE, label="Home", icon=":material/home:")
    st.stop()

by_id = {r["run_id"]: r for r in evaluated}
top = st.columns([3, 2, 2])
run_id = ui.run_select(by_id, RUN_KEY, "Run", what="finished, evaluated run", container=top[0])
run_dir = Path(by_id[run_id]["path"])
evals = ui.load_eval(run_dir)
keys = ui.ordered_eval_keys(evals)
if st.session_state.get(SUBSET_KEY) not in keys:
    st.session_state[SUBSET_KEY] = keys[0]
key = top[1].selectbox("Split / subset", keys, key=SUBSET_KEY,
                       format_func=lambda k: f"{k}  ·  {evals[k].get('n', '?')} faces")
st.session_state.setdefault(NORMALISE_KEY, False)
top[2].markdown("&nbsp;")  # line the toggle up with the select boxes
normalise = top[2].toggle("Normalise rows", key=NORMALISE_KEY, help="Show each row as shares of its true class")
split, _, subset = key.partition("/")
result = evals[key]
names = list(result["class_names"])
counts = np.asarray(result["confusion"], dtype=int)

# --------------------------------------------------------------------------------------------- the cell
chart_key = f"confusion.chart.{run_id}.{key}"
event = st.session_state.get(chart_key) or {}
points = (event.get("selection") or {}).get("points") or []
picked = st.session_state.setdefault(PICKED_KEY, {})
if points and points[0].get("x") in names and points[0].get("y") in names:
    cell = (names.index(points[0]["y"]), names.index(points[0]["x"]))
    if picked.get(chart_key) != cell:  # a new click: the select boxes follow it
        picked[chart_key] = cell
        st.session_state[TRUE_KEY], st.session_state[PRED_KEY] = cell
if not all(isinstance(st.session_state.get(k), int) and 0 <= st.session_state[k] < len(names)
           for k in (TRUE_KEY, PRED_KEY)):
    st.session_state[TRUE_KEY], st.session_state[PRED_KEY] = compare.top_confusion(counts)

left, right = st.columns([3, 2], gap="medium")
with right:
    st.markdown("**Faces behind a cell**  \nClick a cell of the matrix, or pick it here.")
    true = st.selectbox("True class", range(len(names)), key=TRUE_KEY,
                        format_func=lambda i: f"{names[i]}  ·  {counts[i].sum()} faces")
    pred = st.selectbox("Predicted class", range(len(names)), key=PRED_KEY,
                        format_func=lambda j: f"{names[j]}  ·  {counts[true][j]} faces")
    row_total = int(counts[true].sum())
    n_cell = int(counts[true][pred])
    share = 100.0 * n_cell / row_total if row_total else 0.0
    what = "classified correctly" if true == pred else f"taken for **{names[pred]}**"
    st.markdown(f"**{n_cell}** of the {row_total} **{names[true]}** faces of `{key}` are {what} ({share:.1f}%).")
    st.caption("Mistakes are listed most confident first, right answers least confident first; the overlay is the "
               "Grad-CAM of the predicted class (red: what the model looked at most).")
with left:
    fig = charts.pickable_confusion_matrix(counts, names, normalise=normalise, selected=(true, pred),
                                               title=f"{run_id}: {key} ({ui.pct(result.get('accuracy')) or 0:.1f}%)")
    st.plotly_chart(fig, width="stretch", key=chart_key, on_select="rerun", selection_mode="points")

# --------------------------------------------------------------------------------------------- the faces
try:
    predictions = _predictions(str(run_dir), split, subset, ui.file_stamp(io.eval_paths(run_dir, split, subset)[1]))
except (FileNotFoundError, ValueError, KeyError) as err:
    st.error(f"Could not read the per-face predictions of `{key}`: {err}")
    st.stop()
samples = compare.cell_samples(predictions, true, pred)
if samples.empty:
    st.info(f"No {names[true]} face was predicted as {names[pred]} in `{key}`. Pick another cell.")
    st.stop()

pages = compare.page_count(len(samples), PER_PAGE)
cell_id = (run_id, key, true, pred)
if st.session_state.get(CELL_KEY) != cell_id or not 1 <= st.session_state.get(PAGE_KEY, 1) <= pages:
    st.session_state[CELL_KEY], st.session_state[PAGE_KEY] = cell_id, 1
if pages > 1:
    nav = st.columns([1, 4])
    page = nav[0].number_input(f"Page (of {pages})", min_value=1, max_value=pages, step=1, key=PAGE_KEY)
    nav[1].markdown("&nbsp;")
    nav[1].caption(f"{len(samples)} faces, {PER_PAGE} a page.")
else:
    page = 1
shown = samples.iloc[(page - 1) * PER_PAGE: page * PER_PAGE]
indices = tuple(int(i) for i in shown["index"])

config_stamp = (ui.file_stamp(run_dir / "config.yaml"),)
try:
    faces = compare.face_images(_dataset(str(run_dir), split, subset, config_stamp), indices)
except Exception as err:  # noqa: BLE001 - a data set that cannot be rebuilt (moved files, changed code): say so
    st.error(f"Could not rebuild the faces of `{key}` from the run's config: {err}")
    st.stop()
overlays: list[np.ndarray | None] = [None] * len(faces)
try:
    with st.spinner(f"Grad-CAM for {len(faces)} faces..."):
        overlays = _overlays(str(run_dir), split, subset, indices, tuple(int(p) for p in shown["pred"]),
                             config_stamp + (ui.file_stamp(weights_path(run_dir, "best")),))
except Exception as err:  # noqa: BLE001 - show the faces anyway, and why there is no overlay
    st.warning(f"No Grad-CAM overlays: {err}")

cols = st.columns(COLUMNS)
for i, (row, face, heat) in enumerate(zip(shown.to_dict("records"), faces, overlays, strict=True)):
    with cols[i % COLUMNS].container(border=True):
        face, heat = (None if a is None else render.enlarge(a, FACE_PIXELS) for a in (face, heat))
        gap = np.full((FACE_PIXELS, FACE_PIXELS // 16, 3), 255, dtype=np.uint8)
        image = face if heat is None else np.hstack([face, gap, heat])
        st.image(image, width="stretch",
                 caption="face" if heat is None else f"face · Grad-CAM of {names[int(row['pred'])]}")
        probs = compare.probabilities(row, names)
        ranked = list(probs.items())[:3]
        st.markdown(f"**#{row['index']}** · {names[int(row['pred'])]} **{100 * row['confidence']:.0f}%**")
        st.caption(" · ".join(f"{name} {100 * p:.0f}%" for name, p in ranked))
        st.progress(min(1.0, max(0.0, float(probs.get(names[true], 0.0)))),
                    text=f"p({names[true]}) = {100 * probs.get(names[true], 0.0):.0f}%")
