"""Reading and writing video files with OpenCV: the part of :mod:`fer_core.video` that needs no model (SynthFACS
clips are written with it, and data sets must not reach the models).

**Decoding** is OpenCV's (``cv2.VideoCapture``, its FFmpeg back end): MP4 (H.264, MPEG-4), WebM (VP8/VP9, what a
browser's webcam recorder writes), MKV, AVI, MOV... Time stamps are the container's (``CAP_PROP_POS_MSEC``) when they
increase, else ``frame / fps``. A file OpenCV cannot open, one without a frame, or one whose frames are larger than
``max_pixels`` raises :class:`VideoError` before any frame is used; a clip that breaks off part way yields the frames
decoded before the break, and :func:`iter_frames` says so in ``info_out["decode_note"]``.

**Writing** (:func:`video_writer`): the codec follows the file's ending (:data:`WRITERS`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = ["MAX_FRAME_PIXELS", "VIDEO_SUFFIXES", "WRITERS", "VideoError", "VideoInfo", "is_video", "iter_frames",
           "probe_video", "read_frame", "video_writer"]

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ogv")
"""File name endings treated as video by ``predict`` and the app."""

WRITERS = {".mp4": "mp4v", ".avi": "MJPG", ".webm": "VP90"}
"""Video files this OpenCV writes, by ending: MPEG-4 Part 2 in MP4 (players; browsers do not play it), Motion JPEG
in AVI, VP9 in WebM (plays in browsers, the app's choice). OpenCV's wheels ship no H.264 encoder."""

MAX_FRAME_PIXELS = 3840 * 2160
"""Largest frame decoded by default: 4K UHD. A larger frame is refused before decoding (scale the video down)."""

class VideoError(ValueError):
    """A video that cannot be used: not found, not decodable, without frames, or with frames too large."""


def is_video(path: str | os.PathLike) -> bool:
    """Whether a file name ends like a video (:data:`VIDEO_SUFFIXES`)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


# --------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video (before decoding it).

    Attributes:
        path: the file.
        frames: frame count from the container (an estimate for some formats; 0 when it does not say).
        fps: frames per second from the container (25 assumed, and ``fps_assumed`` True, when it gives none).
        width, height: frame size in pixels.
        codec: the four-character code of the stream (e.g. ``avc1``, ``mp4v``, ``VP90``).
        fps_assumed: the container gave no usable frame rate.
    """

    path: str
    frames: int
    fps: float
    width: int
    height: int
    codec: str
    fps_assumed: bool = False

    @property
    def duration_s(self) -> float:
        """Length in seconds (from the frame count and rate; 0 when the count is unknown)."""
        return self.frames / self.fps if self.fps else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "duration_s": round(self.duration_s, 3)}


def _open(path: str | os.PathLike, max_pixels: int | None) -> tuple[cv2.VideoCapture, VideoInfo]:
    """An opened capture and its info, after every check that can be made before decoding."""
    p = Path(path)
    if not p.exists():
        raise VideoError(f"no such video file: {p}")
    if p.is_dir():
        raise VideoError(f"{p} is a folder, not a video file (a folder of photos: predict FOLDER --out x.csv)")
    if p.stat().st_size == 0:
        raise VideoError(f"{p} is empty (0 bytes): nothing to decode; record or copy the clip again")
    cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"cannot decode {p}: OpenCV's FFmpeg could not open it as a video (damaged, not a video, or "
                         f"a codec it lacks); convert it, e.g. ffmpeg -i {p.name} -c:v libvpx-vp9 clip.webm "
                         f"(formats that work: {', '.join(s.lstrip('.') for s in VIDEO_SUFFIXES)})")
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if max_pixels and width * height > max_pixels:
        cap.release()
        raise VideoError(f"{p}: frames of {width} x {height} pixels are larger than the {max_pixels:,}-pixel limit "
                         f"(4K UHD is {MAX_FRAME_PIXELS:,}); scale the clip down first, e.g. ffmpeg -i {p.name} "
                         "-vf scale=1280:-2 smaller.mp4")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    assumed = not (math.isfinite(fps) and 0.5 <= fps <= 1000)
    count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    frames = int(count) if math.isfinite(count) and count > 0 else 0
    code = int(cap.get(cv2.CAP_PROP_FOURCC))
    codec = "".join(chr((code >> 8 * i) & 0xFF) for i in range(4)).strip("\x00 ") if code > 0 else ""
    info = VideoInfo(path=str(p), frames=frames, fps=25.0 if assumed else fps, width=width, height=height,
                     codec=codec, fps_assumed=assumed)
    return cap, info


def probe_video(path: str | os.PathLike, *, max_pixels: int | None = MAX_FRAME_PIXELS) -> VideoInfo:
    """The container's description of a video, after checking that its first frame decodes.

    Raises:
        VideoError: not found, empty, not decodable, no frame, or frames larger than ``max_pixels``.
    """
    cap, info = _open(path, max_pixels)
    try:
        ok, _ = cap.read()
    finally:
        cap.release()
    if not ok:
        raise VideoError(f"{path}: no frame could be decoded (a zero-length or broken clip)")
    return info


def iter_frames(path: str | os.PathLike, *, max_pixels: int | None = MAX_FRAME_PIXELS, stop: int | None = None,
                info_out: dict[str, Any] | None = None) -> Iterator[tuple[int, float, np.ndarray]]:
    """``(frame index, time in seconds, RGB uint8 frame)`` for each frame, in order.

    Args:
        path: the video file.
        max_pixels: refuse larger frames (before decoding).
        stop: decode at most this many frames.
        info_out: a dict that receives ``"info"`` (:class:`VideoInfo`) when opened and, at the end, ``"decoded"``
            (frames decoded) and ``"decode_note"`` when decoding stopped short of the frames the container announced.

    Raises:
        VideoError: as :func:`probe_video`, raised before the first frame is yielded.
    """
    cap, info = _open(path, max_pixels)
    out = info_out if info_out is not None else {}
    out["info"] = info
    index, last_t = 0, -1.0
    try:
        while stop is None or index < stop:
            ok, bgr = cap.read()
            if not ok or bgr is None:
                break
            ms = cap.get(cv2.CAP_PROP_POS_MSEC)
            t = ms / 1000.0 if math.isfinite(ms) and ms / 1000.0 > last_t and not info.fps_assumed else index / info.fps
            if t <= last_t:  # time stamps that repeat or go back: fall back on the frame rate
                t = index / info.fps
            last_t = t
            yield index, t, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        cap.release()
        out["decoded"] = index
        if index == 0:
            out["decode_note"] = "no frame could be decoded"
        elif stop is None and info.frames and index < info.frames - 1:
            out["decode_note"] = (f"decoding stopped at frame {index} of the {info.frames} the container announces "
                                  "(a damaged or truncated clip); the frames before it are used")
    if index == 0:
        raise VideoError(f"{path}: no frame could be decoded (a zero-length or broken clip)")


def read_frame(path: str | os.PathLike, index: int, *, max_pixels: int | None = MAX_FRAME_PIXELS) -> np.ndarray:
    """Frame ``index`` (0-based) of a video, RGB uint8 (for scrubbing: it seeks, then decodes forward).

    Raises:
        VideoError: the video cannot be read, or it has no such frame.
    """
    if index < 0:
        raise VideoError(f"frame index must be >= 0, got {index}")
    cap, info = _open(path, max_pixels)
    try:
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, bgr = cap.read()
        if ok and int(round(cap.get(cv2.CAP_PROP_POS_FRAMES))) != index + 1:
            ok = False  # the seek did not land on the frame asked for: decode from the start instead
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            for _ in range(index + 1):
                ok, bgr = cap.read()
                if not ok:
                    break
    finally:
        cap.release()
    if not ok or bgr is None:
        raise VideoError(f"{path}: no frame {index} (the clip has {info.frames or 'fewer'} frames)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def video_writer(path: str | os.PathLike, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    """An opened OpenCV writer for ``path``, the codec chosen by its ending (:data:`WRITERS`); ``size`` is
    ``(width, height)``. Frames are written as BGR.

    Raises:
        ValueError: another ending, or a writer OpenCV cannot open (the message names the file).
    """
    p = Path(path)
    fourcc = WRITERS.get(p.suffix.lower())
    if fourcc is None:
        raise ValueError(f"cannot write {p}: write a {', '.join(WRITERS)} file ({', '.join(WRITERS.values())}; "
                         ".webm plays in browsers)")
    p.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*fourcc), float(fps), tuple(int(v) for v in size))
    if not writer.isOpened():
        raise ValueError(f"OpenCV could not open a {fourcc} writer for {p} ({size[0]} x {size[1]} at {fps} fps); "
                         f"try another of {', '.join(WRITERS)}")
    return writer
