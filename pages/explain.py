"""Explain a face: a photo (upload or camera) or a SynthFACS test face, a model's probabilities for it, and every
explanation method side by side for the top class or a chosen one.

At the end, the sanity checks (Adebayo et al. 2018): per method, whether its maps changed when the model's weights
or training labels were randomised (the recorded verdicts of ``python -m fer_core explain-sanity``), and, on
request, the chosen method's map on cascade-randomised copies of the current model beside the real one.

On a SynthFACS face the ground-truth relevance mask (where the expression is) is shown too, outlined on every map,
with each method's localisation scores against it (pointing game, relevance mass, relevance rank). Maps are computed
by ``fer_core.explain`` and cached per (model, face, method, class), so switching methods or classes back and forth
is instant.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app import charts, pickers, ui
from fer_core import io
from fer_core.explain import list_methods, method_info
from fer_core.explain.evaluation import localisation
from fer_core.explain.render import enlarge, mask_tile, overlay_tile
from fer_core.explain.sanity import DOCS_ANCHOR, cascade_preview, method_verdicts

FAST, SLOW = pickers.FAST_METHODS, pickers.SLOW_METHODS  # shown by default; only on request
METHODS_KEY = "explain.methods"
TARGET_KEY = "explain.target"
OUTLINE_KEY = "explain.outline"
CALIBRATED_KEY = "explain.calibrated"
RANDOMISED_KEY = "explain.randomised"
RANDOMISED_METHOD_KEY = "explain.randomised_method"
TOP = "top class"
TILE = 224  # display size of every map tile, in pixels
PER_ROW = (5, 3)  # tiles per row without / with the mask and scores beside them

st.session_state.setdefault(METHODS_KEY, [m for m in FAST if m in list_methods()])
st.session_state.setdefault(TARGET_KEY, TOP)
st.session_state.setdefault(OUTLINE_KEY, True)


# --------------------------------------------------------------------------------------------- cached work
@st.cache_data(show_spinner=False, max_entries=256)
def _probabilities(model_key: str, face_key: str, _predictor: Any, _crop: np.ndarray) -> dict[str, float]:
    """The model's probabilities for the crop (keyed on the model and the crop's hash, not on the objects)."""
    return _predictor.predict_crop(_crop).probs


@st.cache_data(show_spinner=False, max_entries=512)
def _explanation(model_key: str, face_key: str, method: str, target: str | None, _predictor: Any,
                 _crop: np.ndarray) -> Any:
    """One method's :class:`fer_core.explain.Explanation` of the crop for ``target`` (None: the top class)."""
    return _predictor.explain_crop(_crop, method, target)


@st.cache_data(show_spinner=False, max_entries=64)
def _temperature(run_dir: str, stamp: tuple) -> float | None:
    """The run's temperature for its best weights (None without one), cached until calibration.json changes."""
    from fer_core.runs import stored_temperature

    try:
        return stored_temperature(run_dir, "best")
    except (OSError, ValueError):
        return None


@st.cache_data(show_spinner=False, max_entries=64)
def _randomised(model_key: str, face_key: str, method: str, target: str | None, _model: Any,
                _crop: np.ndarray) -> list[tuple[str, Any]]:
    """The method's map on the model and on cascade-randomised copies of it (top group, top half, all)."""
    return cascade_preview(_model, _crop, method, target)


# --------------------------------------------------------------------------------------------- inputs
st.title("Explain a face")
st.markdown(
    "Why does the model see this expression? Choose a model and a face: the probabilities come first, then every "
    "explanation method side by side, each drawn the same way (red: most relevant to the class; each map scaled on "
    "its own). SynthFACS faces come with a **ground-truth mask** of where the expression is, so you can check which "
    "methods point at it."
)
model = pickers.model_picker("explain")
if model is None:
    st.stop()
temperature = None if model.run_dir is None else _temperature(
    model.run_dir, (ui.file_stamp(io.calibration_path(model.run_dir)),
                    ui.file_stamp(pickers.best_weights(model.run_dir))))
calibrated = temperature is not None and st.toggle(
    "Calibrated probabilities", key=CALIBRATED_KEY,
    help=f"Divide the model's logits by the run's temperature (T = {temperature or 1:.3f}, fitted on its validation "
         "split by temperature scaling) before the softmax: the same top class, probabilities closer to how often "
         "the model is right. The explanations do not change.")
face = pickers.face_picker("explain", model.synth_options)
if face is None:
    st.stop()
predictor = model.predictor.with_temperature(temperature if calibrated else None)
names = list(predictor.class_names)

# --------------------------------------------------------------------------------------------- prediction
probs = _probabilities(f"{model.key}@T={predictor.temperature}", face.key, predictor, face.crop)
top = max(probs, key=probs.__getitem__)
if st.session_state[TARGET_KEY] not in (TOP, *names):  # a class of the model chosen before
    st.session_state[TARGET_KEY] = TOP
st.subheader("Prediction")
left, right = st.columns([1, 2])
with left:
    st.metric("Top class", top, f"{100 * probs[top]:.1f}% probability", delta_color="off", delta_arrow="off")
    if face.label is not None:
        verdict = "agrees" if face.label == top else "disagrees"
        st.markdown(f"True class: **{face.label}**, the model {verdict}.")
    st.caption(f"{face.name} · {face.details}" if face.details else face.name)
    target_name = st.selectbox("Explain the class", [TOP, *names], key=TARGET_KEY,
                               format_func=lambda c: f"top class ({top})" if c == TOP else c,
                               help="Maps for another class show what speaks for that class in this face.")
target = top if target_name == TOP else target_name
chart = charts.probabilities(probs, highlight=target, truth=face.label if face.label in probs else None,
                      title=f"{model.label.split(' · ')[0]}: probability per class")
right.plotly_chart(chart, width="stretch", key="explain.probs")
right.caption(f"Orange: the class explained below ({target}). Probabilities in percent, the model's class order"
              + (f", after temperature scaling (logits ÷ {temperature:.3f})." if calibrated else "."))

# --------------------------------------------------------------------------------------------- explanations
st.subheader(f"Explanations for {target}")


def _duration(seconds: float) -> str:
    return f"{1000 * seconds:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


methods = st.multiselect(
    "Methods", list_methods(), key=METHODS_KEY, format_func=pickers.method_label,
    help="The fast ones are selected by default; the slow ones (LIME, occlusion, SmoothGrad, integrated gradients, "
         "full Score-CAM) need many forward passes each. "
         + " ".join(f"{m}: {method_info(m).description}." for m in list_methods()),
)
if not methods:
    st.info("Choose one or more methods above.")
    st.stop()

chosen = None if target_name == TOP else target_name
results: dict[str, Any] = {}
failures: dict[str, str] = {}
bar = st.progress(0.0, text="Explaining…")
for i, method in enumerate(methods):
    bar.progress(i / len(methods), text=f"Computing {method} ({i + 1} of {len(methods)})"
                 + (": a slow one, several seconds" if method in SLOW else ""))
    try:
        results[method] = _explanation(model.key, face.key, method, chosen, predictor, face.crop)
    except Exception as err:  # noqa: BLE001 - one failing method is a message, the others still show
        failures[method] = f"{type(err).__name__}: {err}"
bar.empty()
for method, why in failures.items():
    st.error(f"{method} failed: {why}", icon=":material/error:")

mask = face.mask if face.mask is not None and np.asarray(face.mask).any() else None
if mask is not None:
    maps_area, side = st.columns([3, 2], gap="medium")
    st.session_state[OUTLINE_KEY] = st.session_state[OUTLINE_KEY]
    outline = side.toggle("Outline the mask on the maps", key=OUTLINE_KEY)
else:
    maps_area, side, outline = st.container(), None, False

with maps_area:
    tiles: list[tuple[np.ndarray, str]] = [(enlarge(face.crop, TILE), f"the face · {top} {100 * probs[top]:.0f}%")]
    for method, exp in results.items():
        info = method_info(method)
        what = "class-agnostic" if not info.per_class else exp.class_name
        tiles.append((overlay_tile(face.crop, exp.map, size=TILE, mask=mask if outline else None),
                      f"{method} · {what} · {_duration(exp.seconds)}"))
    per_row = PER_ROW[mask is not None]
    for start in range(0, len(tiles), per_row):
        for col, (image, caption) in zip(st.columns(per_row), tiles[start:start + per_row], strict=False):
            col.image(image, caption=caption, width="stretch")
    st.caption("Jet colours: red is the most relevant region for the class, blue the least; each map is scaled to "
               "its own maximum. Signed methods (integrated gradients, occlusion, LIME) show the evidence *for* the "
               "class only." + (" The white line outlines the ground-truth mask." if outline else ""))

if side is not None:
    with side:
        share = float(np.asarray(mask, bool).mean())
        st.image(mask_tile(face.crop, mask, size=TILE), caption="ground-truth relevance mask: where the expression "
                 "is", width=200)
        rows = []
        for method, exp in results.items():
            pointing, mass, rank = localisation(exp.map, mask)
            rows.append({"method": method, "pointing": "hit" if pointing else "miss", "mass": 100 * mass,
                         "rank": 100 * rank})
        rows.append({"method": "random map (chance)", "pointing": f"{100 * share:.0f}%", "mass": 100 * share,
                     "rank": 100 * share})
        st.markdown("**Localisation against the mask**")
        st.dataframe(pd.DataFrame(rows, columns=["method", "pointing", "mass", "rank"]), hide_index=True,
                     width="stretch", key="explain.localisation", column_config={
                         "pointing": st.column_config.TextColumn(
                             "pointing", help="pointing game: does the map's maximum fall inside the mask?"),
                         "mass": st.column_config.NumberColumn(
                             "mass", format="%.0f%%", help="relevance mass: share of the map's positive relevance "
                             "inside the mask"),
                         "rank": st.column_config.NumberColumn(
                             "rank", format="%.0f%%", help="relevance rank: share of the map's top-K pixels inside "
                             "the mask, K = the mask's size"),
                     })
        st.caption(f"The mask covers {100 * share:.0f}% of the face, so a random map scores about that. "
                   "Pointing game, relevance mass and relevance rank as in the explanation benchmark: "
                   "`python -m fer_core explain-eval` scores all methods over many faces.")


# --------------------------------------------------------------------------------------------- sanity checks
def sanity_section(model_key: str, face_key: str, crop: np.ndarray, model_: Any, shown: dict[str, Any],
                   target: str | None) -> None:
    """Per method, the recorded sanity-check verdicts; on request, the chosen method's maps on randomised models."""
    st.subheader("Sanity checks: do the maps depend on the model?")
    st.markdown(
        "Adebayo et al. (NeurIPS 2018): a map that barely changes when the model's weights are re-initialised, or "
        "when the model was trained on shuffled labels, shows the image rather than what the model learned. "
        "A method **passed** when the maps of the fully randomised model and of the label-shuffled model are "
        "dissimilar from the real ones (mean Spearman |rho| and SSIM below 0.5).")
    try:
        results = pickers.sanity_results()
    except ValueError as err:
        st.warning(f"Could not read the sanity-check results: {err}", icon=":material/warning:")
        results = {}
    rows = []
    for method in shown:
        found = method_verdicts(method, results)
        rows.append({"method": method, **{v["label"]: v["verdict"] for v in found}}
                    if found else {"method": method, "verdict": "not checked"})
    table = pd.DataFrame(rows).fillna("not checked")
    st.dataframe(table, hide_index=True, width="stretch", key="explain.sanity")
    with st.expander("The numbers behind the verdicts"):
        what = {"cascade": "all layers random", "shuffled": "shuffled labels"}
        lines = [f"- **{method}** on {v['label']}: " + "; ".join(
                     f"{what.get(check, check)}: mean |rho| {m['spearman_abs']:.2f}, SSIM {m['ssim']:.2f}"
                     for check, m in v["means"].items()) + f" ({v['verdict']})"
                 for method in shown for v in method_verdicts(method, results)]
        st.markdown("\n".join(lines) if lines else "No recorded results for these methods.")
    st.caption(f"The numbers, the commands and a discussion: `{DOCS_ANCHOR}` (section \"Sanity checks\"); "
               "reproduce with `python -m fer_core explain-sanity RUN_OR_MODEL --out DIR`. "
               "Verdicts are per checked model: another model may behave differently.")
    if not st.toggle("Show randomised maps", key=RANDOMISED_KEY,
                     help="The chosen method on copies of this model with the top layer group, the top half and "
                          "all layer groups re-initialised, for the class explained above."):
        return
    if st.session_state.get(RANDOMISED_METHOD_KEY) not in shown:
        st.session_state[RANDOMISED_METHOD_KEY] = next(iter(shown))
    method = st.selectbox("Method", list(shown), key=RANDOMISED_METHOD_KEY)
    with st.spinner(f"Computing {method} on 3 randomised copies of the model…"):
        try:
            pairs = _randomised(model_key, face_key, method, target, model_, crop)
        except Exception as err:  # noqa: BLE001 - a message, not a crashed page
            st.error(f"{method} on the randomised models failed: {type(err).__name__}: {err}",
                     icon=":material/error:")
            return
    for col, (label, exp) in zip(st.columns(len(pairs)), pairs, strict=True):
        col.image(overlay_tile(crop, exp.map, size=TILE), caption=f"{label} · {exp.class_name}", width="stretch")
    st.caption("Every map explains the same class (the trained model's), as in Adebayo et al.; if the maps on "
               "the right still look like the trained one, the method shows the face more than the model.")


if results:
    sanity_section(model.key, face.key, face.crop, predictor.model, results, chosen)
