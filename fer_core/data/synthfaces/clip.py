"""Video clips of SynthFACS faces with per-frame ground truth: test material for video prediction.

A clip shows one face, or two side by side, on a plain canvas (a seeded colour with a soft gradient and slight
noise). Each face is a test subject of the default data set (ids 680-829, identities of seed 0, so a model trained
on SynthFACS has never seen them) and acts expressions the way the CK+ sequences do: every episode goes neutral
hold -> onset (a smooth ease-in) -> apex hold -> offset -> neutral, one expression per episode (by default the
non-neutral classes of the label set in a seeded order, cycling). Episodes last about 2-3 s (an 8 s clip has
three). The intensity is 0 in the holds and a seeded apex in [0.8, 1]; the action units at intensity ``i`` are the
generator's own :func:`~fer_core.data.synthfaces.aus.expression_vector` of ``(class, i)`` drawn with one fixed
random stream per episode, so they follow ``i`` smoothly, without flicker. The head moves smoothly (sums of
sinusoids with seeded periods and phases): yaw within +-25 degrees, pitch and roll within +-8, a drift across the
frame and a mild change of size. With two faces each keeps to its half of the frame (a gap of 3% of the width
between the halves, so the boxes never touch), and their sizes swing in opposite directions, crossing about every
8 s and at least once: a tracker that orders faces by size swaps them, one that tracks them does not.

Each face is rendered by :func:`~fer_core.data.synthfaces.render.render` into a square of its own (the head about
80% of the square's height at the nominal ``face_size``) with no clutter, blur, noise or JPEG and the canvas
colour under it as the background, and pasted with a matte: the pixels the render drew over its plain background,
faded out below the chin (neck and shoulders would otherwise end in a hard line at the square's edge).

Ground truth, one row per face per frame (the columns of :func:`label_columns`; :func:`clip_frames` yields the
same dicts): ``frame`` (from 0), ``time_s`` (frame / fps), ``face_id`` (1 the left face, 2 the right; stable for
the whole clip), ``subject``, ``expression`` (the episode's class; ``neutral`` in the holds), ``intensity`` (0-1),
``label``, ``prob_<class>`` for each class of the label set, the face box ``x, y, w, h`` in frame pixels and the
head pose ``yaw, pitch, roll`` in degrees.

- ``prob_<class>`` is the generator's soft label of what the face shows,
  ``label_distribution(clip(au + identity.bias))``, exactly as for the data set's images, and ``label`` is its most
  probable class. The per-frame truth is this and not the episode's class because early in the onset and late in
  the offset the face does not yet, or no longer, show the expression: at low intensity it is, by the data set's
  own measure, closest to neutral, and a per-frame prediction should be scored against what is visible. The
  episode's intended class stays in ``expression``.
- The box is where a face detector puts one: the width of the head's silhouette
  (:func:`~fer_core.data.synthfaces.render.face_region`, ears and hair left out) and from the upper forehead
  (:data:`BOX_TOP`) down to the chin. OpenCV's Haar boxes of these clips overlap it with a mean IoU of about 0.75.

Everything is a pure function of the options: the same call gives the same frames, byte for byte.
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fer_core.labels import CLASSES
from fer_core.labels import label_set as _label_set

from . import layers
from .aus import AUS, label_distribution
from .aus import expression_vector as _expression_vector
from .dataset import SUBJECT_RANGES, _identity
from .render import FaceSpec, Identity, Nuisance, _scene, face_region, render

if TYPE_CHECKING:  # pandas is imported where a label file is written or read, not with the data set
    import pandas as pd

_HEAD = ("frame", "time_s", "face_id", "subject", "expression", "intensity", "label")
_TAIL = ("x", "y", "w", "h", "yaw", "pitch", "roll")
_INTS = ("frame", "face_id", "subject", "x", "y", "w", "h")

IDENTITY_SEED = 0
"""The data set seed the subjects' faces come from (the default SynthFACS)."""
MAX_FRAME = (3840, 2160)
"""Largest frame, (width, height)."""
MIN_FRAME = 64
"""Smallest frame side."""
MIN_FACE = 24
"""Smallest ``face_size``: the head is then about 20 pixels tall, the least the Haar cascades find."""
HEAD_SCALE = 0.8
"""Head height (top of the skull to the chin) over ``face_size``."""
SIZE_SWING = {1: 0.08, 2: 0.18}
"""Relative change (+-) of a face's size during a clip, by number of faces. Two faces swing in opposite directions
by enough (1.18 / 0.82: twice the area) to outweigh the differences between subjects' head sizes."""
YAW, PITCH, ROLL = 25.0, 8.0, 8.0
"""Largest head rotations, degrees."""
EPISODE_SECONDS = 2.75
"""Longest nominal episode: a clip of s seconds has ceil(s / 2.75) episodes (8 s: 3), lengths jittered by +-15%."""
BOX_TOP = -0.6
"""Height on the head where the face box starts, in units of the head's half height (-1 the top of the skull, 0 the
centre, 1 the chin): the upper forehead, about the hairline. Boxes from there to the chin overlap OpenCV's Haar boxes
of the clips best (mean IoU 0.70, against 0.63 for the whole head and 0.56 from the brows; 2-face clips, seeds 0-2)."""


def label_columns(classes: Sequence[str]) -> list[str]:
    """The label file's columns, in order, for the classes of a label set."""
    return [*_HEAD, *(f"prob_{c}" for c in classes), *_TAIL]


def n_frames(seconds: float, fps: float) -> int:
    """Frames in a clip of ``seconds`` at ``fps``: ``round(seconds * fps)``, at least one."""
    return max(1, round(seconds * fps))


@dataclass(frozen=True)
class ClipInfo:
    """What :func:`write_clip` wrote.

    Attributes:
        path: the video file.
        labels_path: the per-frame ground truth (CSV; read it with :func:`read_labels`).
        frames: frames in the video (and rows per face in the labels).
        fps: frames per second.
        width, height: frame size in pixels.
        faces: faces in every frame.
        classes: the label set's classes (the ``prob_<class>`` columns, in order).
    """

    path: Path
    labels_path: Path
    frames: int
    fps: float
    width: int
    height: int
    faces: int
    classes: tuple[str, ...]


@dataclass(frozen=True)
class _Episode:
    """One expression: neutral until ``onset``, rising to ``peak`` at ``apex``, held until ``offset``, neutral
    again from ``rest`` (and until the next episode)."""

    cls: str
    onset: float
    apex: float
    offset: float
    rest: float
    peak: float
    seed: int

    def intensity(self, t: float) -> float:
        if t < self.onset or t >= self.rest or self.cls == "neutral":
            return 0.0
        if t < self.apex:
            return self.peak * _smoothstep((t - self.onset) / (self.apex - self.onset))
        if t < self.offset:
            return self.peak
        return self.peak * (1.0 - _smoothstep((t - self.offset) / (self.rest - self.offset)))

    def aus(self, intensity: float) -> np.ndarray:
        """The AU vector at an intensity: the generator's own, drawn with this episode's fixed random stream."""
        if intensity <= 0.0 or self.cls == "neutral":
            return np.zeros(len(AUS), np.float32)
        return _expression_vector(self.cls, intensity, np.random.default_rng(self.seed))


class _Wave:
    """A smooth seeded signal in [-1, 1]: a slow and a faster sinusoid, weights summing to 1."""

    def __init__(self, rng: np.random.Generator, slow: tuple[float, float], fast: tuple[float, float]):
        w = rng.uniform(0.6, 0.8)
        self.terms = [(w, rng.uniform(*slow), rng.uniform(0, 2 * np.pi)),
                      (1.0 - w, rng.uniform(*fast), rng.uniform(0, 2 * np.pi))]

    def __call__(self, t: float) -> float:
        return sum(w * math.sin(2 * math.pi * t / period + phase) for w, period, phase in self.terms)


@dataclass
class _Face:
    """Everything about one face of a clip that stays the same from frame to frame."""

    face_id: int
    subject: int
    identity: Identity
    episodes: list[_Episode]
    region: tuple[int, int]  # the columns [x0, x1) of the frame its square stays in
    yaw: _Wave
    pitch: _Wave
    roll: _Wave
    drift_x: _Wave
    drift_y: _Wave
    size: Callable[[float], float]
    light: tuple[float, float, float]
    ambient: float
    side: int

    def episode(self, t: float) -> _Episode:
        return next((ep for ep in self.episodes if t < ep.rest), self.episodes[-1])


def _smoothstep(u: float) -> float:
    u = min(1.0, max(0.0, u))
    return u * u * (3.0 - 2.0 * u)


# --------------------------------------------------------------------------------------------- options and plan
@dataclass
class _Clip:
    """A clip's validated options and its plan; :meth:`frames` renders it."""

    faces: int
    seconds: float
    fps: float
    width: int
    height: int
    seed: int
    classes: tuple[str, ...]
    face_size: int
    plan: list[_Face]

    @property
    def total(self) -> int:
        return n_frames(self.seconds, self.fps)

    def frames(self) -> Iterator[tuple[np.ndarray, list[dict]]]:
        canvas = _canvas(self.width, self.height, self.seed)
        side = _square(self.face_size, self.faces)
        for f in range(self.total):
            frame = canvas.copy()
            rows = [_draw(face, frame, canvas, f, self.fps, side, self.face_size, self.classes) for face in self.plan]
            yield frame, rows


def _real(value, low: float, high: float, low_open: bool = True) -> bool:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return False
    return (value > low if low_open else value >= low) and value <= high


def _whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _prepare(*, faces: int = 1, seconds: float = 8.0, fps: float = 25.0, width: int = 640, height: int = 480,
             seed: int = 0, expressions: Sequence[str] | None = None, label_set: str = "basic7",
             face_size: int | None = None, subjects: Sequence[int] | None = None) -> _Clip:
    """Check every option (ValueError naming it) and plan the clip."""
    if not _whole(faces) or faces not in (1, 2):
        raise ValueError(f"faces must be 1 or 2 (got {faces!r}): a clip shows one face, or two side by side")
    if not _real(seconds, 0.0, math.inf):
        raise ValueError(f"seconds must be a positive number (got {seconds!r})")
    if not _real(fps, 0.0, 120.0):
        raise ValueError(f"fps must be in (0, 120] (got {fps!r}); 25 or 30 is usual")
    for key, value, top in (("width", width, MAX_FRAME[0]), ("height", height, MAX_FRAME[1])):
        if not _whole(value) or not MIN_FRAME <= value <= top:
            raise ValueError(f"{key} must be a whole number of pixels from {MIN_FRAME} to {top} (got {value!r}); "
                             f"frames are {MIN_FRAME}x{MIN_FRAME} to {MAX_FRAME[0]}x{MAX_FRAME[1]}")
    if not _whole(seed):
        raise ValueError(f"seed must be a whole number (got {seed!r})")
    classes = _label_set(label_set)
    chosen = _expressions(expressions, classes, label_set)
    biggest = _max_face_size(faces, width, height)
    if face_size is None:
        face_size = min(round(0.45 * height), biggest)
        if face_size < MIN_FACE:
            raise ValueError(f"a {width}x{height} frame is too small for {faces} faces; make it wider")
    elif not _whole(face_size) or face_size < MIN_FACE:
        raise ValueError(f"face_size must be a whole number of pixels >= {MIN_FACE} (got {face_size!r})")
    elif face_size > biggest:
        raise ValueError(f"face_size={face_size} does not fit a {width}x{height} frame with {faces} face(s): a face "
                         f"at its largest ({1 + SIZE_SWING[faces]:.2f} x face_size) must fit the frame's height and "
                         f"its share of the width; at most {biggest} here")
    if subjects is not None:
        subjects = [int(s) for s in subjects]
        if len(subjects) != faces or len(set(subjects)) != faces or min(subjects) < 0:
            lo, hi = SUBJECT_RANGES["test"]
            raise ValueError(f"subjects must be {faces} different non-negative subject id(s), one per face (got "
                             f"{subjects}); the test subjects are {lo}-{hi - 1}")
    plan = _plan(faces, float(seconds), int(seed), int(width), classes, chosen, expressions is not None, subjects)
    return _Clip(faces=int(faces), seconds=float(seconds), fps=float(fps), width=int(width), height=int(height),
                 seed=int(seed), classes=classes, face_size=int(face_size), plan=plan)


def _expressions(expressions, classes: tuple[str, ...], name: str) -> list[str]:
    if expressions is None:
        return [c for c in classes if c != "neutral"]
    if isinstance(expressions, str):
        expressions = expressions.split(",")
    chosen = [str(e).strip() for e in expressions if str(e).strip()]
    if not chosen:
        raise ValueError(f"expressions is empty; give one or more of {', '.join(classes)} (or None: every "
                         "non-neutral class)")
    unknown = [e for e in chosen if e not in classes]
    if unknown:
        hint = f" ({', '.join(unknown)}: label set 'basic8')" if set(unknown) <= set(CLASSES) else ""
        raise ValueError(f"unknown expression(s) {', '.join(map(repr, unknown))} for label set {name!r}{hint}; "
                         f"valid: {', '.join(classes)}")
    return chosen


def _gap(width: int) -> int:
    """Columns kept free between the halves of a two-face frame."""
    return max(8, round(0.03 * width))


def _square(face_size: int, faces: int) -> int:
    """Side of the square a face is rendered in: room for it at its largest."""
    return math.ceil(face_size * (1 + SIZE_SWING[faces]))


def _max_face_size(faces: int, width: int, height: int) -> int:
    share = width if faces == 1 else (width - _gap(width)) // 2
    return int(min(height, share) / (1 + SIZE_SWING[faces]))


def _regions(faces: int, width: int) -> list[tuple[int, int]]:
    if faces == 1:
        return [(0, width)]
    half, gap = width // 2, _gap(width)
    return [(0, half - gap // 2), (half - gap // 2 + gap, width)]


def _neutral_at_rest(subject: int, classes: tuple[str, ...]) -> bool:
    """Whether a subject's resting face (its AU bias) reads as neutral by the soft label."""
    bias = np.clip(_identity(IDENTITY_SEED, subject).bias, 0.0, 1.0)
    return int(np.argmax(label_distribution(bias, classes))) == classes.index("neutral")


def _episodes(rng: np.random.Generator, seconds: float, order: list[str]) -> list[_Episode]:
    n = max(1, math.ceil(seconds / EPISODE_SECONDS - 1e-9))
    lengths = rng.uniform(0.85, 1.15, n)
    lengths *= seconds / lengths.sum()
    out, start = [], 0.0
    for k, length in enumerate(lengths):  # neutral, onset, apex, offset, neutral: shares of the episode
        parts = np.array([rng.uniform(0.2, 0.3), rng.uniform(0.15, 0.2), rng.uniform(0.3, 0.35),
                          rng.uniform(0.15, 0.2), rng.uniform(0.05, 0.1)])
        edges = start + length * np.cumsum(parts / parts.sum())
        out.append(_Episode(cls=order[k % len(order)], onset=float(edges[0]), apex=float(edges[1]),
                            offset=float(edges[2]), rest=float(edges[3]), peak=float(rng.uniform(0.8, 1.0)),
                            seed=int(rng.integers(2**31))))
        start = float(edges[4])
    return out


def _plan(faces: int, seconds: float, seed: int, width: int, classes: tuple[str, ...], expressions: list[str],
          ordered: bool, subjects: list[int] | None) -> list[_Face]:
    rng = np.random.default_rng([19, seed])
    if subjects is None:
        lo, hi = SUBJECT_RANGES["test"]
        pool = [s for s in range(lo, hi) if _neutral_at_rest(s, classes)]
        subjects = [int(s) for s in rng.choice(pool, size=faces, replace=False)]
    swing = SIZE_SWING[faces]
    crossings = max(1, round(seconds / 8.0))  # two faces: sizes cross every half period, the first mid-stretch
    half_period = seconds / crossings * rng.uniform(0.95, 1.1)
    first = half_period * rng.uniform(0.4, 0.6)
    out = []
    for j, (subject, region) in enumerate(zip(subjects, _regions(faces, width), strict=True)):
        frng = np.random.default_rng([19, seed, j + 1])
        if ordered:  # the given order; a second face starts one further
            order = expressions[j % len(expressions):] + expressions[:j % len(expressions)]
        else:
            order = [expressions[i] for i in frng.permutation(len(expressions))]
        if faces == 2:
            def size(t: float, sign: float = 1.0 - 2.0 * j) -> float:
                return 1.0 + sign * swing * math.sin(math.pi * (t - first) / half_period)
        else:
            def size(t: float, period: float = frng.uniform(5.0, 10.0), phase: float = frng.uniform(0, 2 * np.pi)
                     ) -> float:
                return 1.0 + swing * math.sin(2 * math.pi * t / period + phase)
        out.append(_Face(
            face_id=j + 1, subject=subject, identity=_identity(IDENTITY_SEED, subject),
            episodes=_episodes(frng, seconds, order), region=region,
            yaw=_Wave(frng, (4.0, 8.0), (1.5, 3.0)), pitch=_Wave(frng, (3.0, 6.0), (1.2, 2.5)),
            roll=_Wave(frng, (3.5, 7.0), (1.5, 3.0)), drift_x=_Wave(frng, (6.0, 12.0), (2.5, 5.0)),
            drift_y=_Wave(frng, (5.0, 10.0), (2.0, 4.0)), size=size,
            light=(float(frng.uniform(-0.5, 0.5)), float(frng.uniform(-0.6, 0.0)), 1.0),
            ambient=float(frng.uniform(0.55, 0.7)), side=1 if frng.random() < 0.5 else -1))
    return out


def _canvas(width: int, height: int, seed: int) -> np.ndarray:
    """The clip's background: a seeded plain colour with a soft linear gradient and slight noise (RGB uint8)."""
    rng = np.random.default_rng([19, seed, 0])
    colour = rng.uniform(70, 190, 3).astype(np.float32)
    angle, strength = rng.uniform(0, 2 * np.pi), rng.uniform(0.08, 0.18)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (np.cos(angle) * (xs / width - 0.5) + np.sin(angle) * (ys / height - 0.5)) * 2 * strength
    img = colour * (1 + ramp[..., None]) + rng.normal(0, 2.0, (height, width, 3)).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------- frames
def clip_frames(*, faces: int = 1, seconds: float = 8.0, fps: float = 25.0, width: int = 640, height: int = 480,
                seed: int = 0, expressions: Sequence[str] | None = None, label_set: str = "basic7",
                face_size: int | None = None, subjects: Sequence[int] | None = None
                ) -> Iterator[tuple[np.ndarray, list[dict]]]:
    """The frames of a SynthFACS clip with their ground truth (see the module docstring).

    Args:
        faces: 1, or 2 side by side.
        seconds: length; the clip has :func:`n_frames` ``(seconds, fps)`` frames.
        fps: frames per second, in (0, 120].
        width, height: frame size, from 64x64 to 3840x2160.
        seed: everything random (subjects, expression order, episodes, motion, light, canvas) follows from it.
        expressions: the episodes' classes, cycled in this order (a second face starts one further; a comma
            separated string works too); default: the label set's non-neutral classes in a seeded order per face.
        label_set: ``basic7`` or ``basic8``: the classes of the soft labels.
        face_size: side in pixels of the square a face is rendered in at its nominal size (the head is 80% of it
            tall); default 0.45 x height, or the most that fits.
        subjects: subject ids, one per face (default: seeded test subjects, 680-829, whose resting face reads as
            neutral; 4 of the 150 do not).

    Returns:
        An iterator of ``(frame, rows)``: the RGB uint8 frame ``(height, width, 3)`` and one ground-truth dict per
        face in ``face_id`` order (keys: :func:`label_columns`).

    Raises:
        ValueError: an option out of range (the message names it and says what is valid), raised by this call,
            before any frame is made.
    """
    return _prepare(faces=faces, seconds=seconds, fps=fps, width=width, height=height, seed=seed,
                    expressions=expressions, label_set=label_set, face_size=face_size, subjects=subjects).frames()


def _draw(face: _Face, frame: np.ndarray, canvas: np.ndarray, f: int, fps: float, side: int, face_size: int,
          classes: tuple[str, ...]) -> dict:
    """Render one face at frame ``f``, paste it into ``frame`` and return its ground-truth row."""
    t = f / fps
    height = frame.shape[0]
    x0, x1 = face.region
    left = x0 + (x1 - x0 - side) / 2 * (1 + 0.9 * face.drift_x(t))  # the square's corner, inside the region
    top = (height - side) / 2 * (1 + 0.9 * face.drift_y(t))
    ix, iy = math.floor(left), math.floor(top)
    ep = face.episode(t)
    intensity = round(ep.intensity(t), 4)  # as written in the label file; the AUs follow it
    au = ep.aus(intensity)
    under = canvas[iy:iy + side, ix:ix + side]
    colour = tuple(float(c) for c in under.reshape(-1, 3).mean(0))
    zoom = HEAD_SCALE * face_size * face.size(t) / side
    nuisance = Nuisance(light=face.light, ambient=face.ambient, background=colour, zoom=zoom,
                        dx=(left - ix) / side, dy=0.03 + (top - iy) / side)  # dy 0.03: the head centred
    spec = FaceSpec(identity=face.identity, au=au, yaw=YAW * face.yaw(t), pitch=PITCH * face.pitch(t),
                    roll=ROLL * face.roll(t), unilateral_side=face.side, nuisance=nuisance)
    image, _, _ = render(spec, side)
    head = face_region(spec, side)
    head_rows, head_cols = np.flatnonzero(head.any(1)), np.flatnonzero(head.any(0))
    chin = int(head_rows[-1])
    # the matte: what the render drew over its plain background, faded out below the chin
    plain = layers.background(side, colour, 0, np.random.default_rng(0))
    alpha = np.any(image != plain, axis=-1).astype(np.float32)
    fade = np.clip(1.0 - (np.arange(side, dtype=np.float32) - chin) / (0.15 * side * zoom), 0.0, 1.0)
    alpha *= (fade * fade * (3 - 2 * fade))[:, None]
    a = alpha[..., None]
    frame[iy:iy + side, ix:ix + side] = np.rint(under * (1 - a) + image * a).astype(np.uint8)
    scene = _scene(spec, side, 0.0)
    forehead = scene.px(np.array([-0.3, 0.0, 0.3]), np.full(3, BOX_TOP), 0.0)[:, 1].min()
    box_top = int(np.clip(round(float(forehead)), head_rows[0], chin))
    dist = label_distribution(np.clip(au + face.identity.bias, 0.0, 1.0), classes)
    row = {"frame": f, "time_s": round(t, 6), "face_id": face.face_id, "subject": face.subject,
           "expression": ep.cls if intensity > 0 else "neutral", "intensity": intensity,
           "label": classes[int(np.argmax(dist))]}
    row.update({f"prob_{c}": round(float(p), 6) for c, p in zip(classes, dist, strict=True)})
    row.update({"x": ix + int(head_cols[0]), "y": iy + box_top, "w": int(head_cols[-1] - head_cols[0] + 1),
                "h": chin - box_top + 1, "yaw": round(spec.yaw, 3), "pitch": round(spec.pitch, 3),
                "roll": round(spec.roll, 3)})
    return row


# --------------------------------------------------------------------------------------------- files
def write_clip(out: str | os.PathLike, *, labels: str | os.PathLike | None = None,
               progress: Callable[[int, int], None] | None = None, **clip_options) -> ClipInfo:
    """Render a clip (:func:`clip_frames`) into a video file and its ground truth into a CSV file.

    Args:
        out: the video: ``.mp4`` (mp4v; does not play in web browsers), ``.avi`` (MJPG) or ``.webm`` (VP9).
        labels: the CSV of per-frame ground truth (default ``<out without its suffix>.labels.csv``).
        progress: called as ``progress(done, total)`` after each frame.
        **clip_options: the keyword options of :func:`clip_frames`.

    Both files appear whole or not at all (written under temporary names, then renamed).

    Raises:
        ValueError: an unknown suffix, a video OpenCV cannot write, or a bad clip option.
    """
    import pandas as pd

    from fer_core.io import atomic_write_bytes
    from fer_core.videoio import WRITERS, video_writer

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in WRITERS:
        raise ValueError(f"cannot write a video to {out}: unknown suffix {out.suffix or '(none)'!r}; use "
                         f"{', '.join(WRITERS)}")
    labels_path = Path(labels) if labels is not None else out.with_name(out.name[:-len(out.suffix)] + ".labels.csv")
    if labels_path.resolve() == out.resolve():
        raise ValueError(f"the labels would overwrite the video {out}; give another labels path")
    valid = list(inspect.signature(clip_frames).parameters)
    unknown = sorted(set(clip_options) - set(valid))
    if unknown:
        raise ValueError(f"unknown clip option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    clip = _prepare(**clip_options)  # every option checked before a file is touched
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp{suffix}")
    writer = None
    rows: list[dict] = []
    try:
        writer = video_writer(tmp, clip.fps, (clip.width, clip.height))
        for done, (frame, truth) in enumerate(clip.frames(), start=1):
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
            rows.extend(truth)
            if progress is not None:
                progress(done, clip.total)
        writer.release()
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise ValueError(f"OpenCV wrote nothing to {out} with codec {WRITERS[suffix]!r}; the suffixes that "
                             f"work are {', '.join(WRITERS)}")
        table = pd.DataFrame(rows, columns=label_columns(clip.classes))
        atomic_write_bytes(labels_path, table.to_csv(index=False).encode("utf-8"))
        os.replace(tmp, out)
    finally:
        if writer is not None:
            writer.release()
        if tmp.is_file():  # (never a folder that happens to have its name)
            tmp.unlink()
    return ClipInfo(path=out, labels_path=labels_path, frames=clip.total, fps=clip.fps, width=clip.width,
                    height=clip.height, faces=clip.faces, classes=clip.classes)


def read_labels(path: str | os.PathLike) -> pd.DataFrame:
    """Read a clip's label file (:func:`write_clip`) back, checked.

    Returns:
        The table, columns as :func:`label_columns` (``frame, face_id, subject, x, y, w, h`` as int64, the other
        numbers float64); ``df.attrs["classes"]`` holds the classes of its ``prob_`` columns.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a clip label file, or a bad value (the message names the file, the column and the line).
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such label file: {path} (write_clip writes <video>.labels.csv beside the video)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a readable CSV file: {err}") from None
    cols = list(df.columns)
    probs = [c for c in cols if c.startswith("prob_")]
    classes = tuple(c[len("prob_"):] for c in probs)
    unknown = [c for c in probs if c[len("prob_"):] not in CLASSES]
    if unknown:
        raise ValueError(f"{path}: column(s) {', '.join(unknown)} name no class; the classes are {', '.join(CLASSES)}")
    expected = label_columns(classes)
    if cols != expected or len(classes) < 2:
        missing = [c for c in expected if c not in cols] + ([] if len(classes) >= 2 else ["prob_<class> columns"])
        extra = [c for c in cols if c not in expected]
        what = "; ".join([*([f"missing {', '.join(missing)}"] if missing else []),
                          *([f"unexpected {', '.join(extra)}"] if extra else [])]) or "columns out of order"
        raise ValueError(f"{path} is not a clip label file ({what}); expected the columns {', '.join(_HEAD)}, "
                         f"prob_<class> for each class, {', '.join(_TAIL)}")

    def bad(column: str, i: int, why: str) -> ValueError:
        return ValueError(f"{path}, line {i + 2}, column {column}: {why} (got {df.at[i, column]!r})")

    for column in (*_INTS, "time_s", "intensity", "yaw", "pitch", "roll", *probs):
        values = pd.to_numeric(df[column], errors="coerce")
        wrong = values.isna() | ~np.isfinite(values.fillna(0))
        if column in _INTS:
            wrong |= values.notna() & (values != values.round())
        if wrong.any():
            raise bad(column, int(np.flatnonzero(wrong.to_numpy())[0]),
                      "must be a whole number" if column in _INTS else "must be a number")
        df[column] = values.astype(np.int64 if column in _INTS else np.float64)
    checks = [("frame", df["frame"] < 0, "must be >= 0"), ("face_id", df["face_id"] < 1, "must be >= 1"),
              ("subject", df["subject"] < 0, "must be >= 0"), ("w", df["w"] < 1, "must be >= 1"),
              ("h", df["h"] < 1, "must be >= 1"), ("time_s", df["time_s"] < 0, "must be >= 0"),
              ("intensity", (df["intensity"] < 0) | (df["intensity"] > 1), "must be in [0, 1]")]
    checks += [(c, (df[c] < 0) | (df[c] > 1), "must be a probability in [0, 1]") for c in probs]
    checks += [(c, ~df[c].isin(classes), f"must be one of {', '.join(classes)}") for c in ("expression", "label")]
    for column, wrong, why in checks:
        if wrong.any():
            raise bad(column, int(np.flatnonzero(wrong.to_numpy())[0]), why)
    p = df[probs].to_numpy()
    off = np.abs(p.sum(1) - 1.0) > 1e-3
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise ValueError(f"{path}, line {i + 2}: the prob_ columns sum to {p[i].sum():.4f}, not 1")
    labelled = p[np.arange(len(df)), [classes.index(c) for c in df["label"]]]
    wrong = labelled < p.max(1) - 1e-6
    if wrong.any():
        raise bad("label", int(np.flatnonzero(wrong)[0]), "must be the class with the highest prob_")
    twice = df.duplicated(["frame", "face_id"]).to_numpy()
    if twice.any():
        i = int(np.flatnonzero(twice)[0])
        raise ValueError(f"{path}, line {i + 2}: frame {df.at[i, 'frame']} has a second row for face_id "
                         f"{df.at[i, 'face_id']}")
    df.attrs["classes"] = classes
    return df


__all__ = ["ClipInfo", "clip_frames", "label_columns", "n_frames", "read_labels", "write_clip"]
