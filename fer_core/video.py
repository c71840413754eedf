"""Expressions over time in a video: decode it, find and track the faces, classify each face in each frame, smooth
each face's probabilities over time, and draw it all back onto the video.

Usage::

    from fer_core.predict import Predictor
    from fer_core.video import predict_video, write_overlay, summarize_video, write_predictions
    predictor = Predictor.from_run("runs/my-run")            # or Predictor.from_model(), Predictor.from_onnx(...)
    df = predict_video(predictor, "clip.mp4", progress=lambda done, total: ...)
    write_predictions(df, "frames.csv")                      # or .parquet
    write_overlay("clip.mp4", df, "overlay.webm", predictor=predictor, method="gradcam")
    summarize_video(df)                                      # frames, faces, time with a face, each face's classes

On the command line: ``python -m fer_core predict clip.mp4 --out frames.csv [--overlay out.mp4 --method gradcam]``.

**The table** has one row per face per frame (``status`` ``"ok"``) and one row per frame without a face (``"no
face"``, empty face columns), in frame order, then face id. Columns (:func:`columns`): ``frame`` (0-based),
``time_s`` (the frame's time stamp in seconds), ``face_id`` (1, 2, ... in order of appearance; a face keeps its id
while it is tracked), ``x y w h`` (the face box in frame pixels), ``detector`` (the cascade that found it), ``detected``
(False where the box was carried over from the last detection, see ``detect_every``), ``prob_<class>`` (the model's
probabilities for this frame alone), ``top``, ``score``, ``smooth_<class>`` and ``smooth_top`` (the face's
probabilities smoothed over time) and ``status``. ``df.attrs`` holds the video's :class:`VideoInfo`, the model's name
and, when decoding stopped before the end the container announced, ``decode_note``.

**Decoding and writing** are :mod:`fer_core.videoio`'s (OpenCV; its names are importable from here too): a file
OpenCV cannot open, one without a frame, or one whose frames are larger than ``max_pixels`` raises
:class:`VideoError` before any frame is classified; a clip that breaks off part way keeps the frames decoded before
the break, and says so.

**Faces** are found with :func:`fer_core.face.detect_faces` on a copy of the frame scaled to ``detect_side`` pixels
(320 by default: faces larger than about 40 pixels in a 640 x 480 frame; detection is most of the cost), every
``detect_every`` frames (1 by default: every frame); in between, each face keeps its last box. Crops are not
rotated to level the eyes by default (``align=False``): on video, eyes found in one frame and not the next make the
crop jump. **Tracking** (:class:`FaceTracker`) matches each frame's boxes to the faces seen before by overlap (IoU,
the Hungarian assignment of ``scipy.optimize.linear_sum_assignment``), not by size or position order, so two faces
that change size or cross keep their ids; a face unseen for longer than ``max_missing_s`` ends, and a face that
comes back later gets a new id.

**Ground truth.** :func:`match_truth` gives each tracked face, in each frame, the true class of the labelled face
its box overlaps (a label table with a row per face per frame, such as the ``<clip>.labels.csv`` that
``python -m fer_core data video synthfaces`` writes beside a SynthFACS clip), and how often the model agrees;
``predict clip.mp4 --truth clip.labels.csv`` prints that agreement and writes the matching beside the table.

**Smoothing** is an exponential moving average of each face's probabilities with time constant ``smooth_s``
(0.3 s by default), weighted by the time between its frames (``1 - exp(-dt / smooth_s)``), so it does not depend
on the frame rate; it uses only past frames (the same numbers live from a webcam). ``smooth_s=0`` turns it off.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np
import pandas as pd

from fer_core.batch_predict import class_names_of, write_predictions
from fer_core.face import Face, crop_face, detect_faces
from fer_core.videoio import (
    MAX_FRAME_PIXELS,
    VIDEO_SUFFIXES,
    WRITERS,
    VideoError,
    VideoInfo,
    is_video,
    iter_frames,
    probe_video,
    read_frame,
    video_writer,
)

if TYPE_CHECKING:  # pragma: no cover
    from fer_core.predict import Predictor

__all__ = ["MAX_FRAME_PIXELS", "VIDEO_SUFFIXES", "WRITERS", "FaceTracker", "VideoError", "VideoInfo", "class_names_of",
           "columns", "describe_agreement", "face_of", "is_video", "iter_frames", "match_truth", "predict_video",
           "probe_video", "read_frame", "smooth_probabilities", "summarize_video", "video_writer", "write_overlay",
           "write_predictions"]

Progress = Callable[[int, int], None]
"""``progress(frames done, frames in all)``; the total is the container's count (an estimate; 0 when unknown)."""

OK, NO_FACE = "ok", "no face"
BOX = ("x", "y", "w", "h")
_TRACK_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
                  (240, 50, 230), (210, 245, 60))


def columns(class_names: list[str] | tuple[str, ...]) -> list[str]:
    """The table's columns for a model with these classes, in order."""
    return ["frame", "time_s", "face_id", *BOX, "detector", "detected", *(f"prob_{c}" for c in class_names), "top",
            "score", *(f"smooth_{c}" for c in class_names), "smooth_top", "status"]


# --------------------------------------------------------------------------------------------- tracking
def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (``N x 4``, x y w h) with every box of ``b`` (``M x 4``)."""
    ax0, ay0, ax1, ay1 = a[:, 0:1], a[:, 1:2], a[:, 0:1] + a[:, 2:3], a[:, 1:2] + a[:, 3:4]
    bx0, by0, bx1, by1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None)
    ih = np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None)
    inter = iw * ih
    union = a[:, 2:3] * a[:, 3:4] + b[:, 2] * b[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


@dataclass
class _Track:
    id: int
    box: tuple[int, int, int, int]
    last_t: float
    hits: int = 1


@dataclass
class FaceTracker:
    """Gives each face box of a frame a stable id (1, 2, ... in order of appearance).

    Boxes are matched to the faces alive in the previous frames by overlap: the assignment that maximises the
    total IoU (Hungarian), keeping only pairs with IoU >= ``min_iou``. The boxes and faces left over are then
    matched by distance (Hungarian on the distance between box centres in units of the boxes' mean side, pairs
    within ``max_jump`` sides): a face the detector lost for a while and finds again somewhere near, after it moved
    on, keeps its id. A box matched to nothing starts a new face; a face not matched for more than
    ``max_missing_s`` seconds ends (its id is never given again). Tracking uses boxes only (no appearance): a
    different person who appears where a face was lost, within ``max_missing_s``, takes over its id.

    Args:
        min_iou: least overlap for a box to continue a face (faces move little between frames; 0.2 allows for fast
            motion and for boxes carried over several frames).
        max_missing_s: how long a face may go undetected (a missed detection, a hand in front) and keep its id.
            The Haar cascades can lose a face for more than a second (a dark-skinned SynthFACS subject with an open
            mouth: 1.3 s, during which it moved 1.04 of its width), so 2 s by default.
        max_jump: how far (centre to centre, in box sides) a face left unmatched by overlap may have moved.
    """

    min_iou: float = 0.2
    max_missing_s: float = 2.0
    max_jump: float = 1.5
    _tracks: list[_Track] = field(default_factory=list)
    _next_id: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.min_iou <= 1.0:
            raise ValueError(f"min_iou must be in (0, 1], got {self.min_iou}")
        if self.max_missing_s < 0:
            raise ValueError(f"max_missing_s must be >= 0, got {self.max_missing_s}")
        if self.max_jump < 0:
            raise ValueError(f"max_jump must be >= 0 (box sides), got {self.max_jump}")

    @property
    def active(self) -> dict[int, tuple[int, int, int, int]]:
        """``{id: last box}`` of the faces still tracked."""
        return {t.id: t.box for t in self._tracks}

    def update(self, boxes: list[tuple[int, int, int, int]], t: float) -> list[int]:
        """The id of each box (same order) seen at time ``t`` (seconds, increasing)."""
        from scipy.optimize import linear_sum_assignment

        self._tracks = [k for k in self._tracks if t - k.last_t <= self.max_missing_s]
        ids: list[int | None] = [None] * len(boxes)
        if boxes and self._tracks:
            iou = _iou_matrix(np.array([k.box for k in self._tracks], float), np.array(boxes, float))
            rows, cols = linear_sum_assignment(iou, maximize=True)
            for r, c in zip(rows, cols, strict=True):
                if iou[r, c] >= self.min_iou:
                    self._continue(self._tracks[r], boxes[c], t)
                    ids[c] = self._tracks[r].id
            left = [c for c in range(len(boxes)) if ids[c] is None]
            lost = [k for k in self._tracks if k.last_t < t]
            if left and lost:
                a, b = np.array([k.box for k in lost], float), np.array([boxes[c] for c in left], float)
                centre_a, centre_b = a[:, :2] + a[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
                side = (a[:, 2:].mean(1)[:, None] + b[:, 2:].mean(1)[None, :]) / 2
                jump = np.linalg.norm(centre_a[:, None] - centre_b[None], axis=2) / np.maximum(side, 1.0)
                for r, c in zip(*linear_sum_assignment(jump), strict=True):
                    if jump[r, c] <= self.max_jump:
                        self._continue(lost[r], boxes[left[c]], t)
                        ids[left[c]] = lost[r].id
        for c, box in enumerate(boxes):
            if ids[c] is None:
                self._tracks.append(_Track(id=self._next_id, box=tuple(box), last_t=t))
                ids[c] = self._next_id
                self._next_id += 1
        return [int(i) for i in ids]  # type: ignore[arg-type]

    @staticmethod
    def _continue(track: _Track, box: tuple[int, int, int, int], t: float) -> None:
        track.box, track.last_t, track.hits = tuple(box), t, track.hits + 1


# --------------------------------------------------------------------------------------------- prediction
def smooth_probabilities(times: np.ndarray, probs: np.ndarray, smooth_s: float) -> np.ndarray:
    """Exponential moving average of one face's probabilities (``T x C``, frames in time order) with time constant
    ``smooth_s`` seconds: ``s_k = s_{k-1} + a_k (p_k - s_{k-1})``, ``a_k = 1 - exp(-(t_k - t_{k-1}) / smooth_s)``,
    ``s_0 = p_0``. Rows still sum to 1. ``smooth_s = 0``: the probabilities themselves."""
    if smooth_s < 0:
        raise ValueError(f"smooth_s must be >= 0 seconds, got {smooth_s}")
    out = np.array(probs, dtype=np.float64, copy=True)
    if smooth_s == 0 or len(out) < 2:
        return out.astype(np.float32)
    dt = np.diff(np.asarray(times, dtype=np.float64))
    alpha = 1.0 - np.exp(-np.clip(dt, 0, None) / smooth_s)
    for k in range(1, len(out)):
        out[k] = out[k - 1] + alpha[k - 1] * (out[k] - out[k - 1])
    return out.astype(np.float32)


def predict_video(predictor: Predictor, path: str | os.PathLike, *, faces: Literal["largest", "all"] = "all",
                  detect_every: int = 1, detect_side: int = 320, align: bool = False, margin: float = 0.2,
                  min_size: int | None = None, smooth_s: float = 0.3, min_iou: float = 0.2,
                  max_missing_s: float = 2.0, max_jump: float = 1.5, min_track_frames: int = 3,
                  max_frames: int | None = None,
                  max_pixels: int | None = MAX_FRAME_PIXELS, progress: Progress | None = None) -> pd.DataFrame:
    """Classify the faces of every frame of a video (see the module's description for the table).

    Args:
        predictor: a :class:`fer_core.predict.Predictor` (PyTorch or an exported ONNX file).
        path: the video file.
        faces: ``"all"`` faces of each frame, or the ``"largest"`` one only.
        detect_every: run the detector every this many frames; in between faces keep their last box.
        detect_side: longer side of the copy of the frame the detector runs on (None: full size).
        align: rotate each crop to level the eyes (off by default: it flickers on video).
        margin: crop margin around the box (:func:`fer_core.face.crop_face`).
        min_size: smallest face side looked for, in frame pixels (default: a twentieth of the shorter side).
        smooth_s: time constant of the smoothing in seconds (0: none).
        min_iou, max_missing_s, max_jump: the tracker's (:class:`FaceTracker`).
        min_track_frames: a face seen in fewer frames is dropped as a false detection (the cascades' false faces
            come and go within a frame or two); its frames keep their other faces, or get a "no face" row. Faces are
            numbered again 1, 2, ... afterwards; ``df.attrs["short_tracks_dropped"]`` counts them. 1 keeps all.
        max_frames: stop after this many frames.
        max_pixels: refuse larger frames.
        progress: ``progress(done, total)`` after each frame (total: the container's count, 0 if unknown).

    Raises:
        VideoError: the video cannot be used (nothing is classified then).
        ValueError: a bad option.
    """
    if faces not in ("largest", "all"):
        raise ValueError(f"unknown faces mode {faces!r}; valid: 'largest', 'all'")
    if detect_every < 1:
        raise ValueError(f"detect_every must be >= 1 (frames), got {detect_every}")
    if detect_side is not None and detect_side < 64:
        raise ValueError(f"detect_side must be >= 64 pixels (or None for full size), got {detect_side}")
    if smooth_s < 0:
        raise ValueError(f"smooth_s must be >= 0 seconds, got {smooth_s}")
    if min_track_frames < 1:
        raise ValueError(f"min_track_frames must be >= 1, got {min_track_frames}")
    tracker = FaceTracker(min_iou=min_iou, max_missing_s=max_missing_s, max_jump=max_jump)
    classes = list(predictor.class_names)
    meta: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    carried: list[tuple[tuple[int, int, int, int], str]] = []
    for index, t, frame in iter_frames(path, max_pixels=max_pixels, stop=max_frames, info_out=meta):
        if index % detect_every == 0:
            found = detect_faces(frame, min_size=min_size, max_side=detect_side, margin=margin, align=align)
            if faces == "largest":
                found = found[:1]
            carried = [(f.box, f.detector) for f in found]
            detected = True
        else:  # between detections: each face's last box, cropped from this frame
            found = [crop_face(frame, box, margin, align=align, detector=name) for box, name in carried]
            detected = False
        if found:
            ids = tracker.update([f.box for f in found], t)
            probs = predictor.probabilities([f.crop for f in found])
            for face, face_id, p in sorted(zip(found, ids, probs, strict=True), key=lambda r: r[1]):
                top = int(np.argmax(p))
                rows.append({"frame": index, "time_s": round(t, 4), "face_id": face_id,
                             **dict(zip(BOX, (int(v) for v in face.box), strict=True)), "detector": face.detector,
                             "detected": detected, **{f"prob_{c}": float(v) for c, v in zip(classes, p, strict=True)},
                             "top": classes[top], "score": float(p[top]), "status": OK})
        else:
            rows.append({"frame": index, "time_s": round(t, 4), "status": NO_FACE})
        if progress is not None:
            progress(index + 1, meta["info"].frames)
    df = pd.DataFrame(rows).reindex(columns=columns(classes))
    df, dropped = _drop_short_tracks(df, min_track_frames)
    df["face_id"] = df["face_id"].astype("Int64")
    for c in BOX:
        df[c] = df[c].astype("Int64")
    df["detected"] = df["detected"].astype("boolean")
    _add_smoothing(df, classes, smooth_s)
    df.attrs.update(video=meta["info"].to_dict(), model=predictor.name, smooth_s=smooth_s, detect_every=detect_every,
                    detect_side=detect_side, margin=margin, align=align, short_tracks_dropped=dropped)
    if "decode_note" in meta:
        df.attrs["decode_note"] = meta["decode_note"]
    return df


def _drop_short_tracks(df: pd.DataFrame, min_frames: int) -> tuple[pd.DataFrame, int]:
    """Remove the faces seen in fewer than ``min_frames`` frames (a cascade's passing false detection), number the
    rest 1, 2, ... in order of appearance again, and give a frame left without a face its "no face" row."""
    ok = df["status"] == OK
    sizes = df[ok].groupby("face_id")["frame"].size()
    short = sizes.index[sizes < min_frames]
    if len(short) == 0:
        return df, 0
    keep = df[~(ok & df["face_id"].isin(short))]
    empty = sorted(set(df["frame"]) - set(keep["frame"]))
    blanks = df[df["frame"].isin(empty)].drop_duplicates("frame")[["frame", "time_s"]].assign(status=NO_FACE)
    out = pd.concat([keep, blanks.reindex(columns=df.columns)], ignore_index=True)
    out = out.sort_values(["frame", "face_id"], kind="stable", na_position="first").reset_index(drop=True)
    order = {old: new for new, old in enumerate(pd.unique(out.loc[out["status"] == OK, "face_id"]), start=1)}
    out["face_id"] = out["face_id"].map(order)
    return out, len(short)


def _add_smoothing(df: pd.DataFrame, classes: list[str], smooth_s: float) -> None:
    prob_cols = [f"prob_{c}" for c in classes]
    smooth_cols = [f"smooth_{c}" for c in classes]
    df["smooth_top"] = df["smooth_top"].astype(object)
    faces = df[df["status"] == OK]
    for _, track in faces.groupby("face_id", sort=False):
        smoothed = smooth_probabilities(track["time_s"].to_numpy(float), track[prob_cols].to_numpy(float), smooth_s)
        df.loc[track.index, smooth_cols] = smoothed
        df.loc[track.index, "smooth_top"] = [classes[k] for k in smoothed.argmax(1)]


def summarize_video(df: pd.DataFrame) -> dict[str, Any]:
    """Counts of a video table: ``frames``, ``frames_with_face``, ``faces`` (ids), and per face (``per_face``: id
    -> first and last time, frames, the class most often on top after smoothing, mean smoothed probabilities), plus
    ``decode_note`` when the clip broke off."""
    classes = class_names_of(df)
    ok = df[df["status"] == OK]
    per_face = {}
    for face_id, track in ok.groupby("face_id"):
        mean = track[[f"smooth_{c}" for c in classes]].mean().to_numpy()
        per_face[int(face_id)] = {
            "first_s": float(track["time_s"].min()), "last_s": float(track["time_s"].max()), "frames": len(track),
            "most_often": str(track["smooth_top"].mode().iloc[0]),
            "mean": {c: round(float(v), 4) for c, v in zip(classes, mean, strict=True)}}
    out = {"frames": int(df["frame"].nunique()), "frames_with_face": int(ok["frame"].nunique()),
           "faces": len(per_face), "per_face": per_face}
    if df.attrs.get("decode_note"):
        out["decode_note"] = df.attrs["decode_note"]
    return out


def describe_video(summary: dict[str, Any]) -> str:
    """A short account of :func:`summarize_video`'s numbers, one line per face."""
    lines = [f"{summary['frames']} frame(s), {summary['frames_with_face']} with a face, {summary['faces']} face(s) "
             "tracked"]
    for face_id, s in summary["per_face"].items():
        lines.append(f"face {face_id}: {s['first_s']:.2f}-{s['last_s']:.2f} s, {s['frames']} frames, most often "
                     f"{s['most_often']}")
    if summary.get("decode_note"):
        lines.append(f"note: {summary['decode_note']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- ground truth
TRUTH_COLUMNS = ("frame", "face_id", "label", *BOX)
"""Columns :func:`match_truth` reads from a label table (a SynthFACS clip's ``<clip>.labels.csv`` has them)."""


def match_truth(df: pd.DataFrame, labels: pd.DataFrame, *, min_iou: float = 0.3) -> pd.DataFrame:
    """The true class of each tracked face in each frame, from a label table with a row per face per frame
    (:data:`TRUTH_COLUMNS`: ``frame``, the labelled ``face_id``, its ``label`` and its box ``x y w h``, e.g. what
    ``fer_core.data.synthfaces.write_clip`` writes beside a clip).

    In each frame the tracked faces' boxes are matched to the labelled boxes by overlap: the assignment that
    maximises the total IoU (Hungarian, as the tracker does), keeping pairs with IoU >= ``min_iou``. Neither ids nor
    the order of the faces need to agree, and a tracked face that swapped places with another still gets its own
    truth. A tracked face that overlaps no labelled face (a false detection) has no truth in that frame.

    Returns:
        One row per face row of ``df`` (status "ok"), in its order: ``frame``, ``time_s``, ``face_id`` (tracked),
        ``truth_id`` (the labelled face matched; <NA> when none), ``iou``, ``truth`` (its label; None when none),
        ``top``, ``smooth_top``, ``agree`` and ``smooth_agree`` (whether ``top`` / ``smooth_top`` equal the truth;
        <NA> without one). ``attrs["agreement"]``: ``{"matched": rows with a truth, "unmatched": rows without,
        "top": share of matched rows whose top class is the truth, "smooth_top": the same after smoothing,
        "per_face": {face id: {"truth_id": the labelled face it matched most often, "matched", "top",
        "smooth_top"}}, "recall": share of the labelled faces (in the table's frames) that a tracked face matched,
        "id_switches": how often a labelled face was matched to another tracked id than the frame before it was
        matched (CLEAR MOT's identity switches)}`` (shares None when nothing matched).

    Raises:
        ValueError: the label table lacks a column (named), or ``min_iou`` is not in (0, 1].
    """
    if not 0.0 < min_iou <= 1.0:
        raise ValueError(f"min_iou must be in (0, 1], got {min_iou}")
    missing = [c for c in TRUTH_COLUMNS if c not in labels.columns]
    if missing:
        raise ValueError(f"the label table has no {', '.join(missing)} column(s) (it has {', '.join(map(str, labels))})"
                         f"; a label table needs {', '.join(TRUTH_COLUMNS)}, one row per face per frame")
    faces = df[df["status"] == OK]
    out = pd.DataFrame({"frame": faces["frame"].to_numpy(), "time_s": faces["time_s"].to_numpy(),
                        "face_id": faces["face_id"].to_numpy(), "truth_id": pd.array([pd.NA] * len(faces), "Int64"),
                        "iou": np.zeros(len(faces)), "truth": pd.Series([None] * len(faces), dtype=object),
                        "top": faces["top"].to_numpy(), "smooth_top": faces["smooth_top"].to_numpy()})
    truth_by_frame = {int(k): g for k, g in labels.groupby("frame", sort=False)}
    positions = pd.Series(np.arange(len(faces))).groupby(faces["frame"].to_numpy()).apply(list)
    for frame, rows in positions.items():
        truth = truth_by_frame.get(int(frame))
        if truth is None or truth.empty:
            continue
        from scipy.optimize import linear_sum_assignment

        tracked = faces.iloc[rows][list(BOX)].to_numpy(float)
        iou = _iou_matrix(tracked, truth[list(BOX)].to_numpy(float))
        for r, c in zip(*linear_sum_assignment(iou, maximize=True), strict=True):
            if iou[r, c] >= min_iou:
                k = rows[r]
                out.loc[k, ["truth_id", "iou", "truth"]] = [int(truth["face_id"].iloc[c]), float(iou[r, c]),
                                                           str(truth["label"].iloc[c])]
    has = out["truth"].notna()
    for col, pred in (("agree", "top"), ("smooth_agree", "smooth_top")):
        out[col] = pd.array([pd.NA] * len(out), "boolean")
        out.loc[has, col] = (out.loc[has, pred] == out.loc[has, "truth"]).to_numpy()

    def shares(part: pd.DataFrame) -> dict[str, Any]:
        matched = part[part["truth"].notna()]
        n = len(matched)
        return {"matched": n, "top": float(matched["agree"].mean()) if n else None,
                "smooth_top": float(matched["smooth_agree"].mean()) if n else None}

    per_face = {}
    for face_id, part in out.groupby("face_id", sort=True):
        ids = part["truth_id"].dropna()
        per_face[int(face_id)] = {"truth_id": int(ids.mode().iloc[0]) if len(ids) else None, **shares(part)}
    switches = 0  # CLEAR MOT's identity switches: a labelled face matched to another tracked id than last time
    for _, part in out[has].sort_values("frame", kind="stable").groupby("truth_id"):
        ids = part["face_id"].to_numpy()
        switches += int((ids[1:] != ids[:-1]).sum())
    truth_rows = int(labels["frame"].isin(df["frame"]).sum())
    out.attrs["agreement"] = {**shares(out), "unmatched": int((~has).sum()), "per_face": per_face,
                              "recall": int(has.sum()) / truth_rows if truth_rows else None, "id_switches": switches}
    return out


def describe_agreement(agreement: dict[str, Any]) -> str:
    """One line of :func:`match_truth`'s ``attrs["agreement"]``: how often the smoothed and the per-frame class are
    the true one, overall and per face."""
    if not agreement["matched"]:
        return (f"no tracked face overlaps a labelled face (min IoU not reached in {agreement['unmatched']} "
                "face-frames): are these the clip's labels?")
    faces = "; ".join(f"face {k} {100 * v['smooth_top']:.0f}% ({100 * v['top']:.0f}%)"
                      for k, v in agreement["per_face"].items() if v["matched"])
    return (f"the smoothed class is the true one in {100 * agreement['smooth_top']:.0f}% of {agreement['matched']} "
            f"tracked face-frames, the class of each frame alone in {100 * agreement['top']:.0f}%; {faces}"
            + (f"; {agreement['unmatched']} face-frame(s) overlap no labelled face" if agreement["unmatched"] else "")
            + (f"; {100 * agreement['recall']:.0f}% of the labelled faces found, {agreement['id_switches']} id "
               "switch(es)" if agreement.get("recall") is not None else ""))


# --------------------------------------------------------------------------------------------- writing
def _colour(face_id: int) -> tuple[int, int, int]:
    return _TRACK_COLOURS[(face_id - 1) % len(_TRACK_COLOURS)]


def draw_frame(frame: np.ndarray, rows: pd.DataFrame, *, smoothed: bool = True,
               maps: dict[int, tuple[np.ndarray, tuple[int, int, int, int]]] | None = None) -> np.ndarray:
    """One frame with its faces drawn: the explanation map (``maps``: face id -> (map, crop box)) blended into the
    face's crop square, then each face's box in its id's colour and ``#id class probability`` above it. RGB in,
    RGB out (a copy)."""
    out = np.ascontiguousarray(frame.copy())
    h, w = out.shape[:2]
    for m, (x0, y0, side, _) in (maps or {}).values():
        from fer_core.explain import overlay

        xa, ya, xb, yb = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
        if xb <= xa or yb <= ya:
            continue
        crop = np.zeros((side, side, 3), np.uint8)
        crop[ya - y0:yb - y0, xa - x0:xb - x0] = out[ya:yb, xa:xb]
        blended = overlay(crop, m)
        out[ya:yb, xa:xb] = blended[ya - y0:yb - y0, xa - x0:xb - x0]
    scale = max(0.4, min(h, w) / 900)
    for _, r in rows[rows["status"] == OK].iterrows():
        x, y, bw, bh = (int(r[c]) for c in BOX)
        colour = _colour(int(r["face_id"]))
        top = r["smooth_top"] if smoothed else r["top"]
        prob = r[f"smooth_{top}" if smoothed else f"prob_{top}"]
        cv2.rectangle(out, (x, y), (x + bw, y + bh), colour, max(1, round(2 * scale)))
        text = f"#{int(r['face_id'])} {top} {prob:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = max(th + base, y - 4)
        cv2.rectangle(out, (x, ty - th - base), (x + tw + 4, ty + 2), colour, -1)
        cv2.putText(out, text, (x + 2, ty - base + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return out


def face_of(frame: np.ndarray, row: pd.Series | dict[str, Any], *, margin: float = 0.2) -> Face:
    """The crop of one face of the table (a row with status "ok"), cut again from its frame without rotation: what
    the model saw when ``predict_video`` ran with ``align=False`` (the default) and the same ``margin``.

    Raises:
        ValueError: a row without a face (a "no face" row).
    """
    if row.get("status") != OK:
        raise ValueError(f"frame {row.get('frame')} has no face in this row (status {row.get('status')!r}); pass a row "
                         "whose status is 'ok'")
    return crop_face(frame, tuple(int(row[c]) for c in BOX), margin, align=False)


def explain_faces(predictor: Predictor, frame: np.ndarray, rows: pd.DataFrame, method: str, *, margin: float = 0.2,
                  target: str | int | None = None, **options: Any
                  ) -> dict[int, tuple[np.ndarray, tuple[int, int, int, int]]]:
    """The explanation map of each face of one frame (its rows of the table): ``face id -> (map at the crop's
    size, crop box)``, for :func:`draw_frame`. The crop is cut again from the box (not rotated), as the table's
    prediction saw it when ``align`` was off."""
    maps = {}
    for _, r in rows[rows["status"] == OK].iterrows():
        face = face_of(frame, r, margin=margin)
        result = predictor.explain_crop(face.crop, method, target=target, **options)
        maps[int(r["face_id"])] = (result.map, face.crop_box)
    return maps


def write_overlay(source: str | os.PathLike, df: pd.DataFrame, out: str | os.PathLike, *,
                  predictor: Predictor | None = None, method: str | None = None, target: str | int | None = None,
                  smoothed: bool = True, margin: float | None = None, max_pixels: int | None = MAX_FRAME_PIXELS,
                  progress: Progress | None = None) -> Path:
    """The video again with each face's box, id and class drawn (the smoothed class by default) and, with
    ``method``, its explanation map blended in (``fer_core.explain``; computed per face per frame, so slow for
    the perturbation methods). Written by :func:`video_writer` at the clip's frame rate, to a temporary name
    first and renamed when complete.

    Raises:
        ValueError: ``method`` without ``predictor``, or an unusable output name.
        VideoError: the source cannot be decoded.
    """
    margin = float(df.attrs.get("margin", 0.2)) if margin is None else margin  # the crops the table classified
    if method and predictor is None:
        raise ValueError("an explanation overlay (method) needs the predictor that made the table")
    out = Path(out)
    tmp = out.with_name(f".{out.stem}.partial{out.suffix}")
    meta: dict[str, Any] = {}
    by_frame = {k: g for k, g in df.groupby("frame", sort=False)}
    writer = None
    try:
        for index, _, frame in iter_frames(source, max_pixels=max_pixels, info_out=meta):
            if writer is None:
                info: VideoInfo = meta["info"]
                writer = video_writer(tmp, info.fps, (frame.shape[1], frame.shape[0]))
            rows = by_frame.get(index, df.iloc[:0])
            maps = explain_faces(predictor, frame, rows, method, margin=margin, target=target) \
                if method and len(rows) else None
            writer.write(cv2.cvtColor(draw_frame(frame, rows, smoothed=smoothed, maps=maps), cv2.COLOR_RGB2BGR))
            if progress is not None:
                progress(index + 1, meta["info"].frames)
    except BaseException:
        if writer is not None:
            writer.release()
        tmp.unlink(missing_ok=True)
        raise
    writer.release()
    os.replace(tmp, out)
    return out
