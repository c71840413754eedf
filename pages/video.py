"""Explain a video: upload a clip (or a webcam recording from the browser), get every face of every frame tracked
and classified, a timeline of each face's class probabilities, any frame with its faces, one face's crop,
probabilities and explanation, the table as a CSV file and the video with the faces drawn on it.

The page is ``python -m fer_core predict clip.mp4 --out frames.csv --overlay overlay.webm --method gradcam`` in
the browser: decoding, tracking, smoothing, the overlay video and the explanations are :mod:`fer_core.video`'s; the
page only draws. An upload is written to a temporary file in ``$FER_CACHE_DIR/video/`` (OpenCV decodes files, not
bytes), deleted when another clip replaces it. The table is computed once per (model, clip, options) and kept in
the session, like the overlay video; a clip OpenCV cannot use is a message on the page. The example clip is a
SynthFACS clip of two faces with the true class of each face in each frame, drawn on the timelines and matched to
the tracked faces by :func:`fer_core.video.match_truth`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app import charts, pickers, ui
from fer_core import video
from fer_core.explain.render import enlarge, overlay_tile

UPLOAD_KEY = "video.upload"
EXAMPLE_KEY = "video.example"  # True while the example clip is shown (the button sets it, a new upload clears it)
CLIP_KEY = "video.clip"  # {"digest", "path"}: the upload, written to a temporary file
RESULT_KEY = "video.result"  # (key, table)
OVERLAY_KEY = "video.overlay"  # (key, path of the overlay video)
FACES_KEY, EVERY_KEY, SMOOTH_KEY = "video.faces", "video.detect_every", "video.smooth"
FRAME_KEY, FACE_KEY, OVERLAY_EXPLAIN_KEY = "video.frame", "video.face", "video.overlay_explain"
FACE_MODES = {"all": "every face", "largest": "the largest face only"}
# The example clip: two SynthFACS faces, 60 frames (a few seconds to render and to predict on a laptop).
EXAMPLE = {"faces": 2, "seconds": 6.0, "fps": 10.0, "width": 640, "height": 480, "seed": 0}
TILE = 224  # display size of the crop and of the explanation, in pixels
STALE_S = 24 * 3600  # uploads and overlays older than this in the cache folder are deleted (their session ended)


# --------------------------------------------------------------------------------------------- clips
def _scratch() -> Path:
    """``$FER_CACHE_DIR/video/``: the uploads, overlay videos and the example clip (the app writes nowhere else but
    the runs folder and this cache). Uploads and overlays left there by sessions that ended are deleted after a
    day."""
    from fer_core.data.cache import cache_dir

    folder = cache_dir() / "video"
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in folder.glob("fer-lab-*"):
        with contextlib.suppress(OSError):
            if now - old.stat().st_mtime > STALE_S:
                shutil.rmtree(old) if old.is_dir() else old.unlink()
    return folder


def _forget(key: str) -> None:
    """Delete the temporary file (or the folder of an upload) kept under ``key`` in the session."""
    kept = st.session_state.pop(key, None)
    if not kept:
        return
    path = Path(kept[1] if isinstance(kept, tuple) else kept["path"])
    if path.parent.name.startswith("fer-lab-clip-"):
        shutil.rmtree(path.parent, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _uploaded_clip(upload: Any) -> tuple[str, Path]:
    """``(digest of the bytes, temporary file holding them)``, written once per upload under the upload's own name
    (so that messages name it) in a folder of its own; the previous upload is deleted when another replaces it."""
    data = upload.getvalue()
    digest = hashlib.sha1(data).hexdigest()[:20]
    kept = st.session_state.get(CLIP_KEY)
    if kept and kept["digest"] == digest and Path(kept["path"]).exists():
        return digest, Path(kept["path"])
    _forget(CLIP_KEY)
    suffix = Path(upload.name).suffix.lower()
    stem = re.sub(r"[^\w.-]+", "_", Path(upload.name).stem).strip("._")[:80] or "clip"
    path = Path(tempfile.mkdtemp(prefix="fer-lab-clip-", dir=_scratch())) / f"{stem}{suffix}"
    path.write_bytes(data)
    st.session_state[CLIP_KEY] = {"digest": digest, "path": str(path)}
    return digest, path


@st.cache_data(show_spinner=False, max_entries=4)
def _labels(path: str, stamp: tuple) -> pd.DataFrame:
    from fer_core.data.synthfaces.clip import read_labels

    return read_labels(path)


def _example_clip() -> tuple[str, Path, pd.DataFrame]:
    """``(digest, path, label table)`` of the example clip, rendered once into the cache folder (to temporary names,
    renamed when complete, so two sessions rendering it at once do not clash)."""
    options = json.dumps(EXAMPLE, sort_keys=True)
    digest = "example-" + hashlib.sha1(options.encode()).hexdigest()[:12]
    folder = _scratch()
    path, labels = folder / f"{digest}.avi", folder / f"{digest}.labels.csv"
    if not (path.exists() and labels.exists()):
        from fer_core.data.synthfaces.clip import write_clip

        bar = st.progress(0.0, text="Rendering the example clip (two SynthFACS faces)…")
        part = folder / f".{digest}.{os.getpid()}.{threading.get_ident()}"  # two sessions at once do not clash
        try:
            info = write_clip(part.with_suffix(".avi"), labels=part.with_suffix(".csv"), progress=lambda done, total:
                              bar.progress(done / total, text=f"Rendering the example clip: frame {done} of {total}"),
                              **EXAMPLE)
        finally:
            bar.empty()
        os.replace(info.labels_path, labels)
        os.replace(info.path, path)
    return digest, path, _labels(str(labels), ui.file_stamp(labels))


# --------------------------------------------------------------------------------------------- cached work
def _follow(bar: Any) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` for :mod:`fer_core.video` that moves ``bar`` about 50 times in all (the total is
    the container's frame count: 0 when it does not say, and then only the count is shown)."""
    def progress(done: int, total: int) -> None:
        if total and (done >= total or done % max(1, total // 50) == 0):
            bar.progress(min(1.0, done / total), text=f"Frame {done} of {total}")
        elif not total and done % 25 == 0:
            bar.progress(0.0, text=f"Frame {done}")

    return progress


def _table(key: str, predictor: Any, path: Path, options: dict[str, Any]) -> pd.DataFrame:
    """The clip's table, computed with a progress bar once per (model, clip, options) ``key`` and kept in the
    session (not st.cache_data: it would replay the progress bar)."""
    kept = st.session_state.get(RESULT_KEY)
    if kept is not None and kept[0] == key:
        return kept[1]
    _forget(OVERLAY_KEY)  # made from the previous table
    bar = st.progress(0.0, text="Decoding the clip and looking for faces…")

    try:
        table = video.predict_video(predictor, path, progress=_follow(bar), **options)
    finally:
        bar.empty()
    st.session_state[RESULT_KEY] = (key, table)
    return table


@st.cache_data(show_spinner=False, max_entries=32)
def _frame(digest: str, path: str, index: int) -> np.ndarray:
    """Frame ``index`` of the clip (keyed on the clip's digest: a new upload is a new clip)."""
    return video.read_frame(path, index)


@st.cache_data(show_spinner=False, max_entries=256)
def _explanation(model_key: str, digest: str, index: int, face_id: int, method: str, _predictor: Any,
                 _crop: np.ndarray) -> Any:
    """One face's explanation in one frame, for its top class (keyed on the model, clip, frame and face)."""
    return _predictor.explain_crop(_crop, method)


def _overlay(key: str, source: Path, table: pd.DataFrame, predictor: Any, method: str | None) -> Path:
    """The overlay video (.webm, VP9: browsers play it), written with a progress bar once per ``key`` and kept in
    the session; the previous one is deleted."""
    kept = st.session_state.get(OVERLAY_KEY)
    if kept is not None and kept[0] == key and Path(kept[1]).exists():
        return Path(kept[1])
    _forget(OVERLAY_KEY)
    bar = st.progress(0.0, text="Drawing the faces" + (f" and their {method} maps" if method else "") + "…")

    with tempfile.NamedTemporaryFile(prefix="fer-lab-overlay-", suffix=".webm", dir=_scratch(), delete=False) as f:
        out = Path(f.name)
    try:
        video.write_overlay(source, table, out, predictor=predictor, method=method, progress=_follow(bar))
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    finally:
        bar.empty()
    st.session_state[OVERLAY_KEY] = (key, str(out))
    return out


def _cli(name: str, model: pickers.ModelChoice, options: dict[str, Any], method: str | None, truth: bool) -> str:
    """The command that writes the same table (and overlay video, and agreement with the true classes) from a
    shell."""
    parts = ["python -m fer_core predict", name, "--out frames.csv"]
    if truth:
        parts.append(f"--truth {Path(name).stem}.labels.csv")
    if model.run_dir is not None:
        parts.append(f"--run {Path(model.run_dir).name}")
    if options["faces"] == "largest":
        parts.append("--largest")
    if options["detect_every"] != 1:
        parts.append(f"--detect-every {options['detect_every']}")
    if options["smooth_s"] != 0.3:
        parts.append(f"--smooth {options['smooth_s']:g}")
    parts.append("--overlay overlay.webm" + (f" --method {method}" if method else ""))
    return " ".join(parts)


# --------------------------------------------------------------------------------------------- inputs
st.title("Explain a video")
st.markdown(
    "Upload a clip: every face of every frame is found, followed from frame to frame and classified; each face's "
    "probabilities are smoothed over time. Scrub to any frame to see its faces, one face's probabilities and its "
    "explanation, and download the table and the video with the faces drawn on it. Everything here comes from "
    "`python -m fer_core predict clip.mp4 --out frames.csv --overlay overlay.webm --method gradcam` too.")
model = pickers.model_picker("video")
if model is None:
    st.stop()
predictor = model.predictor
if predictor.model is None:
    method = None
    st.info("This model is an exported ONNX file: it has no gradients, so it cannot explain. The timeline, the "
            "frames and the overlay video work without explanations; choose its run for them.",
            icon=":material/info:")
else:
    method = pickers.method_picker(
        "video", label="Explanation method",
        help="The map shown for the chosen face in the chosen frame, and, on request, drawn into every face of the "
             f"overlay video. Fast: {', '.join(pickers.FAST_METHODS)}; the slow ones "
             f"({', '.join(pickers.SLOW_METHODS)}) take seconds per face.")


def _new_upload() -> None:
    st.session_state[EXAMPLE_KEY] = False


def _show_example() -> None:
    st.session_state[EXAMPLE_KEY] = True


left, right = st.columns([3, 1], vertical_alignment="center")
upload = left.file_uploader(
    "A video clip", type=[s.lstrip(".") for s in video.VIDEO_SUFFIXES], key=UPLOAD_KEY, on_change=_new_upload,
    help="MP4, WebM, MKV, AVI, MOV... whatever OpenCV's FFmpeg decodes. A webcam recording from the browser is a "
         ".webm file and works. Frames larger than 4K are refused (scale the clip down first).")
right.button("Try an example clip", key="video.example_button", on_click=_show_example, icon=":material/movie:",
             help="A SynthFACS clip of two synthetic faces changing expression, with the true class of each face in "
                  "each frame drawn on the timelines.")
with st.expander("Options"):
    cols = st.columns(3)
    faces_mode = cols[0].radio("Faces", list(FACE_MODES), format_func=FACE_MODES.__getitem__, key=FACES_KEY,
                               help="Every face of each frame, or the largest one only (faster with crowds).")
    detect_every = int(cols[1].number_input(
        "Look for faces every N frames", min_value=1, max_value=60, value=1, step=1, key=EVERY_KEY,
        help="Detection is most of the cost; in between, each face keeps its last box."))
    smooth_s = float(cols[2].slider(
        "Smoothing (seconds)", min_value=0.0, max_value=3.0, value=0.3, step=0.1, key=SMOOTH_KEY,
        help="Time constant of the moving average of each face's probabilities (past frames only); 0: none."))
options = {"faces": faces_mode, "detect_every": detect_every, "smooth_s": smooth_s}

labels = None
if st.session_state.get(EXAMPLE_KEY):
    try:
        digest, path, labels = _example_clip()
    except Exception as err:  # noqa: BLE001 - a message, never a traceback
        st.error(f"Could not render the example clip: {type(err).__name__}: {err}", icon=":material/error:")
        st.stop()
    name = path.name
    st.caption(f"The example clip: {EXAMPLE['faces']} SynthFACS faces, {EXAMPLE['seconds']:g} s at "
               f"{EXAMPLE['fps']:g} fps, {EXAMPLE['width']}×{EXAMPLE['height']} (`python -m fer_core data video "
               f"synthfaces --out {name} --faces {EXAMPLE['faces']} --seconds {EXAMPLE['seconds']:g} --fps "
               f"{EXAMPLE['fps']:g}`).")
elif upload is not None:
    digest, path = _uploaded_clip(upload)
    name = upload.name
else:
    _forget(CLIP_KEY)
    st.info("Upload a video clip (or a webcam recording), or try the example clip.", icon=":material/movie:")
    st.stop()

try:
    table = _table(f"{model.key}|{digest}|{json.dumps(options, sort_keys=True)}", predictor, path, options)
except (video.VideoError, ValueError) as err:  # the message names the file: by its name, not its temporary folder
    st.error(f"Could not use **{name}**: {str(err).replace(str(path.parent) + os.sep, '')}",
             icon=":material/error:")
    st.stop()
except Exception as err:  # noqa: BLE001 - anything else is a message too, never a traceback
    st.error(f"Could not predict **{name}**: {type(err).__name__}: {err}", icon=":material/error:")
    st.stop()

# --------------------------------------------------------------------------------------------- summary
summary = video.summarize_video(table)
info = table.attrs.get("video", {})
cols = st.columns(4)
cols[0].metric("Frames", summary["frames"])
cols[1].metric("With a face", summary["frames_with_face"])
cols[2].metric("Faces tracked", summary["faces"])
cols[3].metric("Length", f"{summary['frames'] / info['fps']:.1f} s" if info.get("fps") else "?",
               help="frames decoded ÷ frames per second")
described = video.describe_video(summary).splitlines()
st.markdown("\n".join(f"- {line}" for line in described if not line.startswith("note: ")))
st.caption(f"{name}: {info.get('width', '?')}×{info.get('height', '?')}, {info.get('fps', 0):.3g} fps"
           + (" (assumed: the file gives none)" if info.get("fps_assumed") else "")
           + f", codec {info.get('codec') or '?'} · model: {model.label}"
           + (f" · {table.attrs['short_tracks_dropped']} face(s) seen in fewer than 3 frames dropped as false "
              "detections" if table.attrs.get("short_tracks_dropped") else ""))
if table.attrs.get("decode_note"):
    st.warning(table.attrs["decode_note"], icon=":material/broken_image:")
truth = None
if labels is not None:
    truth = video.match_truth(table, labels)
    agreement = truth.attrs["agreement"]
    st.markdown(f"**Against the clip's true classes**: {video.describe_agreement(agreement)}.")

# --------------------------------------------------------------------------------------------- timeline
times = table.drop_duplicates("frame").set_index("frame")["time_s"]
st.subheader("Timeline")
if st.session_state.get(FRAME_KEY) not in times.index:
    st.session_state[FRAME_KEY] = int(times.index[0])
index = int(st.select_slider("Frame", options=[int(i) for i in times.index], key=FRAME_KEY,
                             format_func=lambda i: f"{times[i]:.2f} s (frame {i})",
                             help="Scrub through the clip: the dotted line on the timelines follows."))
t = float(times[index])
x_range = (float(times.min()), float(times.max()))
if summary["faces"]:
    for face_id in summary["per_face"]:
        st.plotly_chart(charts.video_timeline(table, face_id, time_s=t, truth=truth, x_range=x_range),
                        width="stretch", key=f"video.timeline.{face_id}")
    st.caption("Lines: each class's probability smoothed over time; faint dots: the class on top in each frame "
               "alone; breaks: the face is not seen." + (" Squares at the top: the clip's true class." if truth
                                                          is not None else ""))
else:
    st.info("No face was found in any frame. Faces smaller than about a twentieth of the frame's shorter side, "
            "strongly turned or dark are missed by OpenCV's detectors.", icon=":material/face_retouching_off:")

# --------------------------------------------------------------------------------------------- one frame
st.subheader(f"The frame at {t:.2f} s")
try:
    frame = _frame(digest, str(path), index)
except (video.VideoError, ValueError) as err:
    st.error(f"Could not read frame {index} of **{name}**: {err}", icon=":material/error:")
    st.stop()
rows = table[(table["frame"] == index) & (table["status"] == "ok")]
shown, side = st.columns([3, 2], gap="medium")
shown.image(video.draw_frame(frame, rows), width="stretch",
            caption=f"frame {index} · {len(rows)} face(s) · each box: face id, smoothed class and probability")
if rows.empty:
    side.info("No face in this frame.", icon=":material/face_retouching_off:")
else:
    ids = [int(i) for i in rows["face_id"]]
    if st.session_state.get(FACE_KEY) not in ids:
        st.session_state[FACE_KEY] = ids[0]
    face_id = side.selectbox("Face", ids, key=FACE_KEY, format_func=lambda i: (
        f"face {i} · {rows.loc[rows['face_id'] == i, 'smooth_top'].iloc[0]}"))
    row = rows[rows["face_id"] == face_id].iloc[0]
    face = video.face_of(frame, row, margin=table.attrs.get("margin", 0.2))
    true_class = None
    if truth is not None:
        match = truth[(truth["frame"] == index) & (truth["face_id"] == face_id)]
        true_class = match["truth"].iloc[0] if len(match) and match["truth"].iloc[0] is not None else None
    tiles = side.columns(2)
    tiles[0].image(enlarge(face.crop, TILE), caption="the crop the model sees", width="stretch")
    if method is not None:
        try:
            exp = _explanation(model.key, digest, index, face_id, method, predictor, face.crop)
            tiles[1].image(overlay_tile(face.crop, exp.map, size=TILE), width="stretch",
                           caption=f"{method} · {exp.class_name} (this frame's top class)")
        except Exception as err:  # noqa: BLE001 - a failing method is a message, the rest of the page stays
            tiles[1].error(f"{method} failed: {type(err).__name__}: {err}", icon=":material/error:")
    if true_class is not None:
        verdict = "agrees" if true_class == row["smooth_top"] else "disagrees"
        side.markdown(f"True class (the clip's label): **{true_class}**; the smoothed class {verdict}.")
    names = video.class_names_of(table)
    side.plotly_chart(charts.probabilities(
        {c: float(row[f"smooth_{c}"]) for c in names}, highlight=row["smooth_top"], truth=true_class,
        name="smoothed", reference={c: float(row[f"prob_{c}"]) for c in names}, reference_name="this frame alone",
        title=f"Face {face_id} at {t:.2f} s"), width="stretch", key="video.probs")

# --------------------------------------------------------------------------------------------- downloads
st.subheader("Downloads")
stem = Path(name).stem
st.download_button("Download the table (CSV)", table.to_csv(index=False).encode("utf-8"),
                   file_name=f"{stem}_frames.csv", mime="text/csv", icon=":material/download:", key="video.download")
with_map = method is not None and st.toggle(
    f"Draw the {method} map into every face", key=OVERLAY_EXPLAIN_KEY,
    help="One explanation per face per frame: seconds for a short clip with a fast method, much longer with a slow "
         "one.")
overlay_method = method if with_map else None
overlay_key = f"{st.session_state[RESULT_KEY][0]}|{overlay_method}"
kept = st.session_state.get(OVERLAY_KEY)
if st.button("Make the overlay video", key="video.make_overlay", icon=":material/movie_edit:"):
    try:
        _overlay(overlay_key, path, table, predictor, overlay_method)
    except Exception as err:  # noqa: BLE001 - a message, not a crashed page
        st.error(f"Could not write the overlay video: {type(err).__name__}: {err}", icon=":material/error:")
    kept = st.session_state.get(OVERLAY_KEY)
if kept is not None and kept[0] == overlay_key and Path(kept[1]).exists():
    data = Path(kept[1]).read_bytes()
    st.video(data, format="video/webm")
    st.download_button("Download the overlay video (WebM)", data, file_name=f"{stem}_overlay.webm",
                       mime="video/webm", icon=":material/download:", key="video.download_overlay")
st.caption(f"From a shell: `{_cli(name, model, options, overlay_method, labels is not None)}`")
