"""Data sets: what is in each registered data set, and a SynthFACS playground.

Browse: faces per class and split, a few faces of each class, and the challenge subsets (occlusion, pose, ambiguous)
page by page, with SynthFACS's ground-truth relevance masks over the faces. Playground: action units, head pose and
an occluder chosen by hand, the face re-rendered at once, and a model's prediction for it beside the generator's own
soft label. ``/datasets?dataset=<name>`` opens a given data set.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import streamlit as st
import yaml

from app import charts, pickers, ui
from fer_core import io
from fer_core.data import browse, build_dataset
from fer_core.data.sheet import mask_overlay
from fer_core.data.synthfaces import OCCLUDERS
from fer_core.data.synthfaces.aus import AU_DESCRIPTIONS, AUS, PROTOTYPES, prototype_vector
from fer_core.data.synthfaces.dataset import DEFAULT_SIZES, compose_face
from fer_core.labels import CLASSES

NAME_KEY = "datasets.name"
MASKS_KEY = "datasets.masks"
PER_CLASS_KEY = "datasets.per_class"
GRID_SPLIT_KEY = "datasets.grid_split"
SUBSET_KEY = "datasets.subset"
SUBSET_SPLIT_KEY = "datasets.subset_split"
PAGE_KEY = "datasets.subset_page"
OPTIONS_KEY = "datasets.options"
SYNTH_KEYS = {  # SynthFACS options on this page: session_state key -> default
    "datasets.label_set": "basic7", "datasets.seed": 0, "datasets.image_size": 112,
    **{f"datasets.{split}_size": n for split, n in DEFAULT_SIZES.items()},
}
PRESET_KEY = "datasets.play.preset"
POSE_KEYS = {"datasets.play.yaw": 0.0, "datasets.play.pitch": 0.0, "datasets.play.roll": 0.0}
OCCLUDER_KEY = "datasets.play.occluder"
SUBJECT_KEY = "datasets.play.subject"
PLAY_MASK_KEY = "datasets.play.mask"
UPPER_FACE = ("1", "2", "4", "5", "6", "7")  # brows, lids, cheeks; the rest are nose, lips and jaw
FACES_PER_PAGE = 24
MAX_GRID_CLASSES = 12  # classes shown in the faces-per-class grid


def au_key(au: str) -> str:
    return f"datasets.play.au.{au}"


for key, default in {**SYNTH_KEYS, **POSE_KEYS, PRESET_KEY: "happy", OCCLUDER_KEY: "none", SUBJECT_KEY: 700,
                     PLAY_MASK_KEY: False, MASKS_KEY: False, PER_CLASS_KEY: 6, PAGE_KEY: 1,
                     **{au_key(au): float(v) for au, v in zip(AUS, prototype_vector("happy"), strict=True)}}.items():
    st.session_state.setdefault(key, default)


# --------------------------------------------------------------------------------------------- cached data
@st.cache_resource(show_spinner=False, max_entries=8)
def _splits(name: str, root: str | None, options_json: str) -> dict[str, Any]:
    """Every split of a data set, ``{split: data set}``; raises the loader's own error."""
    options = json.loads(options_json)
    first = build_dataset(name, root=root, split="train", **options)
    out = {"train": first}
    for split in getattr(first, "splits", ("train", "val", "test")):
        if split not in out:
            out[split] = build_dataset(name, root=root, split=split, **options)
    return out


@st.cache_resource(show_spinner=False, max_entries=16)
def _subset(name: str, root: str | None, options_json: str, split: str, subset: str) -> Any:
    return build_dataset(name, root=root, split=split, subset=subset, **json.loads(options_json))


@st.cache_data(show_spinner=False, max_entries=64)
def _faces(name: str, root: str | None, options_json: str, split: str, subset: str | None,
           indices: tuple[int, ...]) -> list[dict]:
    """The faces at ``indices`` of a split (or subset), rendered or read once and kept."""
    ds = _splits(name, root, options_json)[split] if subset is None else _subset(name, root, options_json, split,
                                                                                  subset)
    return browse.faces(ds, indices)


@st.cache_data(show_spinner=False, max_entries=256)
def _compose(aus: tuple[tuple[str, float], ...], yaw: float, pitch: float, roll: float, occluder: str, subject: int,
             seed: int, label_set: str) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    face = compose_face(dict(aus), yaw=yaw, pitch=pitch, roll=roll, occluder=occluder, subject=subject, seed=seed,
                        label_set=label_set)
    return face.image, face.mask, dict(zip(face.classes, map(float, face.label_dist), strict=True))


def _show_faces(faces: list[dict], classes: tuple[str, ...], masks: bool, width: int = 96,
                details: bool = False) -> None:
    """A row of faces (wrapping), each with its class under it; masks tinted over the faces when asked."""
    images, captions = charts.face_tiles(faces, classes, masks=masks, details=details)
    st.image(images, caption=captions, width=width, output_format="PNG")


# --------------------------------------------------------------------------------------------- data set choice
st.title("Data sets")
everything = ui.dataset_list()
catalogue = {d["name"]: d for d in everything if not d["needs_root"] or d["root"]}  # built in, or in $FER_DATA
missing = [d["name"] for d in everything if d["needs_root"] and not d["root"]]
wanted = st.query_params.get("dataset")
if wanted in catalogue and st.session_state.get(NAME_KEY) is None:
    st.session_state[NAME_KEY] = wanted
elif st.session_state.get(NAME_KEY) not in catalogue:
    st.session_state[NAME_KEY] = "synthfaces" if "synthfaces" in catalogue else next(iter(catalogue))
name = st.selectbox("Data set", list(catalogue), key=NAME_KEY,
                    format_func=lambda n: n + ("" if catalogue[n]["needs_root"] else "  (built in)"))
st.query_params["dataset"] = name
info = catalogue[name]
if info["description"]:
    st.caption(info["description"] + (f" · files read from `{info['root']}`" if info["root"] else ""))
if missing:
    st.caption(f"Not configured here: {', '.join(missing)}. {ui.data_home_note()} "
               "`python -m fer_core data info NAME --root DIR` checks any folder from a shell.")
is_synth = name == "synthfaces"

browse_tab, play_tab = st.tabs(["Browse the data set", "SynthFACS playground"])


def _synth_options() -> dict[str, Any]:
    """SynthFACS options from the widgets (an expander), as build_dataset keywords."""
    with st.expander("SynthFACS options (the data set's defaults mirror RAF-DB's sizes)"):
        c1, c2, c3 = st.columns(3)
        c1.selectbox("Label set", ["basic7", "basic8"], key="datasets.label_set",
                     help="basic8 adds contempt, as FERPlus and AffectNet-8 have")
        c2.number_input("Seed", min_value=0, max_value=10_000, step=1, key="datasets.seed")
        c3.number_input("Image size (pixels)", min_value=16, max_value=512, step=16, key="datasets.image_size")
        for col, split in zip(st.columns(3), DEFAULT_SIZES, strict=True):
            col.number_input(f"{split} faces", min_value=1, max_value=100_000, step=100, key=f"datasets.{split}_size")
    options = {key.removeprefix("datasets."): st.session_state[key] for key in SYNTH_KEYS}
    return {k: (v if isinstance(v, str) else int(v)) for k, v in options.items()}


def _browse() -> None:
    root: str | None = info["root"]
    options: dict[str, Any] = {}
    if is_synth:
        options = _synth_options()
    elif info["needs_root"]:
        text = st.text_input("Data set options (YAML mapping, as `data.options` in a config)", key=OPTIONS_KEY,
                             placeholder="{mode: probability}  or  {fold: 3}  or  {classes: 8}",
                             help="Options of this data set's loader, e.g. RAN's subset lists (occlusion_list: "
                                  "/path/list.txt) or the protocol; the loader names the valid ones.").strip()
        try:
            options = io.load_yaml(text) if text else {}
        except yaml.YAMLError as err:
            st.error(f"The options are not valid YAML: {err}", icon=":material/error:")
            return
        if not isinstance(options, dict):
            st.error(f"The options must be a mapping like `{{mode: probability}}`, not `{text}`.",
                     icon=":material/error:")
            return
    options_json = json.dumps(options, sort_keys=True)
    try:
        with st.spinner(f"Reading {name}" + (" (rendering parameters of every face once)" if is_synth else "")):
            splits = _splits(name, root, options_json)
    except Exception as err:  # noqa: BLE001 - the loader's own message says what is wrong; never a traceback
        st.error(f"Could not read **{name}**" + (f" from `{root}`" if root else "") + f": {err}",
                 icon=":material/error:")
        if root:
            st.info(f"Check `{root}` against the data set's expected layout: the message above names the missing "
                    "or unexpected file, or the option to change.")
        return
    first = next(iter(splits.values()))
    classes = tuple(first.classes)

    # ------------------------------------------------------------------- class distribution
    st.subheader("Classes")
    counts = {split: browse.class_counts(ds) for split, ds in splits.items()}
    st.plotly_chart(charts.class_counts(counts, classes), width="stretch", key="datasets.counts")
    st.caption(f"{len(classes)} classes · " + " · ".join(f"{s}: {int(c.sum()):,} faces" for s, c in counts.items())
               + ". Hover a bar for its share of the split.")
    skipped = {split: browse.split_report(ds).get("dropped") for split, ds in splits.items()}
    if any(skipped.values()):
        st.caption("Left out by the data set's published rule (counted, not lost): " + " · ".join(
            f"{split}: " + ", ".join(f"{reason.replace('_', ' ')} {n:,}" for reason, n in d.items())
            for split, d in skipped.items() if d) + ".")

    has_masks = is_synth
    if has_masks:
        st.toggle("Show the ground-truth relevance masks over the faces (red: where the expression is)",
                  key=MASKS_KEY)
    masks = has_masks and st.session_state[MASKS_KEY]

    # ------------------------------------------------------------------- faces per class
    st.subheader("Faces per class")
    left, right = st.columns(2)
    split_names = list(splits)
    st.session_state.setdefault(GRID_SPLIT_KEY, "train" if "train" in splits else split_names[0])
    grid_split = left.selectbox("Split", split_names, key=GRID_SPLIT_KEY)
    per_class = right.slider("Faces per class", 1, 12, key=PER_CLASS_KEY)
    picks = browse.per_class_indices(splits[grid_split], per_class, seed=0)
    shown = classes[:MAX_GRID_CLASSES]  # an identity data set has hundreds of classes: a few show what they are
    if len(shown) < len(classes):
        st.caption(f"The first {len(shown)} of {len(classes)} classes.")
    with st.spinner("Rendering faces" if is_synth else "Reading faces"):
        for k, cls in enumerate(shown):
            st.markdown(f"**{cls}** · {int(counts[grid_split][k]):,} faces in {grid_split}")
            if picks[k]:
                _show_faces(_faces(name, root, options_json, grid_split, None, tuple(picks[k])), classes, masks)
            else:
                st.caption("No faces of this class in this split.")

    # ------------------------------------------------------------------- challenge subsets
    st.subheader("Challenge subsets")
    subsets = [s for s in getattr(first, "subsets", ()) if s]
    if not subsets:
        st.info(f"{name} defines no challenge subsets (occlusion, pose, ambiguous).")
        return
    descriptions = ({"clean": "no occluder, |yaw| ≤ 30°", "occlusion": "any occluder", "pose30": "|yaw| > 30°",
                     "pose45": "|yaw| > 45°", "ambiguous": "top soft-label probability below 0.6"} if is_synth else
                    {"occlusion": "RAN's occlusion list", "pose30": "RAN's list of faces turned more than 30°",
                     "pose45": "RAN's list of faces turned more than 45°"})
    left, right = st.columns([3, 1])
    st.session_state.setdefault(SUBSET_KEY, "occlusion" if "occlusion" in subsets else subsets[0])
    subset = left.radio("Subset", ui.ordered_subsets(subsets), key=SUBSET_KEY, horizontal=True)
    st.session_state.setdefault(SUBSET_SPLIT_KEY, "test" if "test" in splits else split_names[0])
    subset_split = right.selectbox("Split", split_names, key=SUBSET_SPLIT_KEY)
    with st.spinner(f"Selecting the {subset} faces"):
        sub = _subset(name, root, options_json, subset_split, subset)
    total = len(splits[subset_split])
    st.caption(f"**{subset}**" + (f" ({descriptions[subset]})" if subset in descriptions else "")
               + f": {len(sub):,} of {total:,} {subset_split} faces ({100 * len(sub) / max(1, total):.1f}%).")
    report = browse.split_report(sub)
    if report.get("unmatched_total") or report.get("duplicates"):
        st.warning(f"Entries of the {subset} list matching no {subset_split} image: "
                   f"{report.get('unmatched_total', 0):,}"
                   + (f" (e.g. {', '.join(report['unmatched'][:5])})" if report.get("unmatched") else "")
                   + f"; entries repeating an earlier one: {report.get('duplicates', 0):,}.",
                   icon=":material/warning:")
    if not len(sub):
        st.info("No faces in this subset.")
        return
    pages = max(1, -(-len(sub) // FACES_PER_PAGE))
    st.session_state[PAGE_KEY] = min(int(st.session_state[PAGE_KEY]), pages)
    page = st.columns([1, 3])[0].number_input(f"Page (of {pages}, {FACES_PER_PAGE} faces each)", min_value=1,
                                              max_value=pages, step=1, key=PAGE_KEY)
    start = (int(page) - 1) * FACES_PER_PAGE
    indices = tuple(range(start, min(len(sub), start + FACES_PER_PAGE)))
    with st.spinner("Rendering faces" if is_synth else "Reading faces"):
        _show_faces(_faces(name, root, options_json, subset_split, subset, indices), classes, masks, width=112,
                    details=True)


with browse_tab:
    _browse()


# --------------------------------------------------------------------------------------------- playground
def _set_preset() -> None:
    """Move every AU slider to the chosen class's prototype (at full intensity)."""
    vec = prototype_vector(st.session_state[PRESET_KEY])
    for au, value in zip(AUS, vec, strict=True):
        st.session_state[au_key(au)] = round(float(value), 2)


def _au_slider(au: str) -> None:
    st.slider(f"AU {au} · {AU_DESCRIPTIONS[au]}", 0.0, 1.0, step=0.05, key=au_key(au))


def _playground() -> None:
    st.markdown("Move the facial **action units** (FACS), turn the head and add an occluder: the face is redrawn "
                "by the SynthFACS generator, and a model says what it sees. The grey bars are the generator's own "
                "soft label for these action units (the ground truth a model should learn).")
    controls, face_col, pred_col = st.columns([5, 4, 5], gap="medium")
    with controls:
        st.selectbox("Start from a class prototype", list(PROTOTYPES), key=PRESET_KEY, on_change=_set_preset,
                     help="Sets every AU slider to the class's EMFACS prototype at full intensity.")
        with st.expander("Upper face: brows, lids, cheeks", expanded=True):
            for au in UPPER_FACE:
                _au_slider(au)
        with st.expander("Lower face: nose, lips, jaw", expanded=False):
            for au in AUS:
                if au not in UPPER_FACE:
                    _au_slider(au)
        with st.expander("Head pose, occluder and subject", expanded=True):
            st.slider("Yaw (°, turn left/right)", -60.0, 60.0, step=5.0, key="datasets.play.yaw")
            st.slider("Pitch (°, nod)", -30.0, 30.0, step=5.0, key="datasets.play.pitch")
            st.slider("Roll (°, tilt)", -30.0, 30.0, step=5.0, key="datasets.play.roll")
            st.selectbox("Occluder", OCCLUDERS, key=OCCLUDER_KEY)
            st.number_input("Subject (face, hair and resting expression)", min_value=0, max_value=829, step=1,
                            key=SUBJECT_KEY, help="Train subjects are 0-599, validation 600-679, test 680-829.")
    aus = tuple((au, float(st.session_state[au_key(au)])) for au in AUS if st.session_state[au_key(au)] > 0)
    label_set = st.session_state["datasets.label_set"]
    try:
        image, mask, truth = _compose(aus, float(st.session_state["datasets.play.yaw"]),
                                      float(st.session_state["datasets.play.pitch"]),
                                      float(st.session_state["datasets.play.roll"]), st.session_state[OCCLUDER_KEY],
                                      int(st.session_state[SUBJECT_KEY]), int(st.session_state["datasets.seed"]),
                                      label_set)
    except ValueError as err:
        st.error(f"Could not draw this face: {err}")
        return
    with face_col:
        st.image(mask_overlay(image, mask) if st.session_state[PLAY_MASK_KEY] else image, width="stretch",
                 output_format="PNG",
                 caption=", ".join(f"AU {au} {v:.2f}" for au, v in aus) or "no action unit: a resting face")
        st.toggle("Show the relevance mask", key=PLAY_MASK_KEY,
                  help="Where the rendered face differs from the same face at rest, minus occluded pixels.")
    with pred_col:
        model = pickers.model_picker("datasets.play", dataset="synthfaces",
                                help="The pretrained mini-Xception, or any finished run trained on SynthFACS.")
        if model is None:
            return
        try:
            prediction = model.predictor.predict_crop(image)
        except Exception as err:  # noqa: BLE001 - a model that fails on this face is a message, not a traceback
            st.error(f"Could not run {model.label}: {err}")
            return
        st.metric("Prediction", prediction.top, f"{100 * prediction.score:.0f}% probability", delta_color="off",
                  delta_arrow="off")
        rank = {c: i for i, c in enumerate(CLASSES)}  # the generator's class order, as the soft label's
        probs = dict(sorted(prediction.probs.items(), key=lambda kv: rank.get(kv[0], len(rank))))
        st.plotly_chart(charts.probabilities(probs, name=model.predictor.name, reference=truth,
                                             reference_name="SynthFACS soft label"),
                        width="stretch", key="datasets.play.probs")
        st.caption(f"Model: {model.predictor.name}. The face goes in whole (no face detection), resized to the "
                   "model's input.")


with play_tab:
    _playground()
