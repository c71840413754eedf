"""CK+ (Extended Cohn-Kanade, Lucey et al. 2010): the last frames of each labelled sequence, 8 classes, with
subject-independent k-fold cross-validation.

Layout under ``root`` (as the authors distribute it; other folders such as ``Landmarks/`` and ``FACS/`` are
ignored)::

    cohn-kanade-images/S005/001/S005_001_00000001.png ...   one folder per subject and sequence, frames from 1
    Emotion/S005/001/S005_001_00000011_emotion.txt          one number, e.g. "   3.0000000e+00"

The 593 sequences (123 subjects) go from a neutral face to the peak of a posed expression; 327 of them have an
emotion file, whose code (0 neutral, 1 anger, 2 contempt, 3 disgust, 4 fear, 5 happy, 6 sadness, 7 surprise) is
mapped to the canonical order of :mod:`fer_core.labels` (``basic8``: CK+ has contempt), and whose file name gives
the sequence's last (peak) frame. The frames are PNG, mostly 640 x 490 grey, some 640 x 480 or 720 x 480, a few
in colour. CK+ is obtained on request from its authors: https://www.jeffcohn.net/Resources/.

Protocol (the usual one): each labelled sequence gives its last ``last_frames`` frames (default 3, the frames up
to the one its emotion file names), labelled with its emotion; with ``neutral_first=True`` its first frame is
added too, labelled neutral (the last frames then never include the first frame). A sequence with fewer frames
than that gives what it has and is listed in ``short_sequences``. Sequences without an emotion file are not used
and are counted in ``dropped["unlabelled_sequences"]``. ``short_sequences`` and ``dropped`` describe the whole
data set, not only the split.

Folds (subject-independent, deterministic): the subjects with at least one labelled sequence (118 in CK+) are
sorted by id, and the subject at position ``i`` belongs to fold ``i % folds`` (option ``folds``, default 10). For
``fold=k``: ``test`` is fold ``k``, ``val`` fold ``(k + 1) % folds`` and ``train`` every other fold, so no
subject is in two splits of the same fold, and the ``test`` splits of ``k = 0 .. folds-1`` together hold every
sample exactly once. Report the mean over the ``folds`` runs. CK+ defines no challenge-condition subsets.

Faces (``crop_face``, default True): each frame is cropped to its largest face by :func:`fer_core.face.faces`
(OpenCV's Haar cascades; a square 1.4 face boxes wide, eyes levelled when found: the crop the predictor makes of a
photo), looking only for faces of at least :data:`MIN_FACE` of the frame's shorter side. Detection runs when a
sample is loaded, about 0.1 s per 640 x 490 frame on one CPU core (measured on a busy shared core); train by
holding the split in memory (:func:`fer_core.data.materialize`), which pays it once per split and fold. When no
face is found, the centre square of the frame is used and its path is added to the set ``no_face``, which fills as
samples are loaded, in the process that loads them (DataLoader worker processes fill their own copies).
``crop_face=False`` uses the whole frame. Either way each image is resized to ``image_size`` x ``image_size``
(default 224; it must be set, since the frames differ in size; a whole frame is squeezed to a square).

Every item carries ``subject`` (its subject id, e.g. ``"S005"``); ``subjects`` and ``sequences`` (e.g.
``"S005/001"``) give them for all samples without loading images.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fer_core.data.registry import register_dataset
from fer_core.face import faces, load_image
from fer_core.labels import CLASSES, DATASET_ORDERS, label_set, mapping_from

from .imagefolder import FileFaceDataset, check_image_size, check_split

__all__ = ["CKPlus", "CKScan", "read_emotion", "scan", "fold_of_subjects", "IMAGE_DIR", "EMOTION_DIR", "MIN_FACE"]

IMAGE_DIR = "cohn-kanade-images"
EMOTION_DIR = "Emotion"
OBTAIN = "CK+ is obtained on request from its authors: https://www.jeffcohn.net/Resources/"
_CODE_TO_CLASS = mapping_from(DATASET_ORDERS["ckplus"])  # CK+ code c (0..7) -> canonical _CODE_TO_CLASS[c]
_NEUTRAL = CLASSES.index("neutral")
MIN_FACE = 0.2
"""Smallest face looked for, as a fraction of a frame's shorter side (98 px of 490; CK+ faces are far larger):
skipping the small scales makes detection about four times faster than the default of a twentieth."""
_FRAME = re.compile(r"^[^.].*_(?P<frame>\d+)\.png$", re.IGNORECASE)  # S005_001_00000011.png (not ._ files)
_EMOTION_FILE = re.compile(r"^[^.].*_(?P<frame>\d+)_emotion\.txt$", re.IGNORECASE)
_FORMAT = "one emotion code 0-7 written as a number, e.g. '   3.0000000e+00'"


def read_emotion(path: Path) -> int:
    """The CK+ code (0..7) in an emotion file; ValueError naming the file and line unless it holds one such number."""
    code = None
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            text = line.strip()
            if not text:
                continue
            if code is not None:
                raise ValueError(f"{path} line {n}: expected {_FORMAT} and nothing else, got a second line {text!r}")
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{path} line {n}: expected {_FORMAT}, got {text!r}") from None
            if not (value.is_integer() and 0 <= value <= 7):
                raise ValueError(f"{path} line {n}: expected {_FORMAT}, got {text!r} (not a whole number 0-7)")
            code = int(value)
    if code is None:
        raise ValueError(f"{path} line 1: expected {_FORMAT}, but the file is empty")
    return code


def _folders(path: Path) -> list[Path]:
    """Sub-folders of ``path`` in name order (hidden ones, like macOS's, left out)."""
    return sorted((p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


@dataclass
class CKScan:
    """Every sample of CK+ (all subjects), in subject, sequence, frame order."""

    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)
    sequences: list[str] = field(default_factory=list)
    unlabelled: int = 0
    short_sequences: list[str] = field(default_factory=list)


def _emotion_files(emotion_root: Path) -> dict[tuple[str, str], tuple[Path, int]]:
    """``(subject, sequence) -> (emotion file, last frame number from its name)``."""
    out = {}
    for subject in _folders(emotion_root):
        for seq in _folders(subject):
            found = sorted(p for p in seq.iterdir() if p.name.lower().endswith("_emotion.txt")
                           and not p.name.startswith("."))
            if len(found) > 1:
                raise ValueError(f"{seq} holds {len(found)} emotion files ({', '.join(p.name for p in found)}); "
                                 "a CK+ sequence has at most one")
            if found:
                m = _EMOTION_FILE.match(found[0].name)
                if m is None:
                    raise ValueError(f"{found[0]}: cannot read the last frame number from the file name; expected "
                                     f"{subject.name}_{seq.name}_<frame>_emotion.txt")
                out[(subject.name, seq.name)] = (found[0], int(m["frame"]))
    return out


def scan(root: Path, last_frames: int = 3, neutral_first: bool = False) -> CKScan:
    """Read CK+'s folders (see the module docstring); errors name the folder, file or line at fault."""
    image_root, emotion_root = root / IMAGE_DIR, root / EMOTION_DIR
    missing = [str(p) for p in (image_root, emotion_root) if not p.is_dir()]
    if missing:
        raise FileNotFoundError(f"CK+ not found under {root}: missing {' and '.join(missing)}; expected "
                                f"{IMAGE_DIR}/S005/001/S005_001_00000001.png ... and "
                                f"{EMOTION_DIR}/S005/001/S005_001_00000011_emotion.txt. {OBTAIN}")
    on_disk = {(s.name, q.name) for s in _folders(image_root) for q in _folders(s)}
    labelled = _emotion_files(emotion_root)
    out = CKScan(unlabelled=len(on_disk - set(labelled)))
    absent: list[str] = []
    for (subject, seq), (emotion_file, last) in sorted(labelled.items()):
        folder = image_root / subject / seq
        if (subject, seq) not in on_disk:
            absent.append(f"{folder} (the sequence folder, for {emotion_file})")
            continue
        files = {int(m["frame"]): folder / m.string for m in map(_FRAME.match, os.listdir(folder)) if m is not None}
        if last not in files:
            absent.append(f"{folder / f'{subject}_{seq}_{last:08d}.png'} (the last frame named by {emotion_file})")
            continue
        label = _CODE_TO_CLASS[read_emotion(emotion_file)]
        numbers = sorted(n for n in files if n <= last)
        pool = numbers[1:] if neutral_first else numbers
        chosen = pool[-last_frames:]
        if len(chosen) < last_frames:
            out.short_sequences.append(f"{subject}/{seq}")
        rows = ([(numbers[0], _NEUTRAL)] if neutral_first else []) + [(n, label) for n in chosen]
        for n, lab in rows:
            out.paths.append(files[n])
            out.labels.append(lab)
            out.subjects.append(subject)
            out.sequences.append(f"{subject}/{seq}")
    if absent:
        raise FileNotFoundError(f"{len(absent)} labelled CK+ sequence(s) lack their images under {image_root}, e.g. "
                                f"{'; '.join(absent[:5])}")
    return out


def _whole(name: str, value, low: int, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be a whole number >= {low}{why}, got {name}={value!r}")
    return value


def fold_of_subjects(subjects, folds: int) -> dict[str, int]:
    """``subject -> fold``: sorted by id, the subject at position i belongs to fold ``i % folds``."""
    return {s: i % folds for i, s in enumerate(sorted(set(subjects)))}


class CKPlus(FileFaceDataset):
    """CK+ last frames with subject-independent folds (see the module docstring). Options: ``last_frames`` (3),
    ``neutral_first`` (False), ``folds`` (10), ``fold`` (0), ``crop_face`` (True), ``image_size`` (224).

    Attributes beyond :class:`FileFaceDataset`'s: ``subjects`` and ``sequences`` (per sample), ``fold_subjects``
    (this split's subjects), ``dropped`` (``{"unlabelled_sequences": n}``, whole data set), ``short_sequences``
    (whole data set) and ``no_face`` (paths where no face was found, filled as samples are loaded).
    """

    name = "ckplus"

    def __init__(self, root, split: str = "train", subset: str | None = None, *, last_frames: int = 3,
                 neutral_first: bool = False, folds: int = 10, fold: int = 0, crop_face: bool = True,
                 image_size: int | None = 224):
        check_split(self.name, split)
        if subset not in (None, "all"):
            raise ValueError(f"{self.name} defines no subsets; use subset=None or 'all', not {subset!r}")
        _whole("last_frames", last_frames, 1)
        _whole("folds", folds, 3, " (test and val take one fold each, train the rest)")
        if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
            raise ValueError(f"fold must be a whole number from 0 to {folds - 1} (folds={folds}), got fold={fold!r}")
        for opt, value in (("neutral_first", neutral_first), ("crop_face", crop_face)):
            if not isinstance(value, bool):
                raise ValueError(f"{opt} must be true or false, got {opt}={value!r}")
        if check_image_size(image_size) is None:
            raise ValueError("CK+ frames differ in size (640x490, 640x480, 720x480): image_size must be set "
                             "(default 224)")
        root = Path(root).expanduser()
        found = scan(root, last_frames, neutral_first)
        fold_of = fold_of_subjects(found.subjects, folds)
        if folds > len(fold_of):
            raise ValueError(f"folds={folds} is more than the {len(fold_of)} subjects with labelled sequences "
                             f"under {root}")
        wanted = {"test": {fold}, "val": {(fold + 1) % folds}}.get(split)
        wanted = wanted or set(range(folds)) - {fold, (fold + 1) % folds}
        keep = [fold_of[s] in wanted for s in found.subjects]
        self.subjects = [s for s, k in zip(found.subjects, keep, strict=True) if k]
        self.sequences = [s for s, k in zip(found.sequences, keep, strict=True) if k]
        self.fold_subjects = tuple(sorted(s for s, f in fold_of.items() if f in wanted))
        self.dropped = {"unlabelled_sequences": found.unlabelled}
        self.short_sequences = found.short_sequences
        self.crop_face = crop_face
        self.no_face: set[Path] = set()
        config = {"root": str(root), "last_frames": last_frames, "neutral_first": neutral_first, "folds": folds,
                  "fold": fold, "crop_face": crop_face}
        super().__init__([p for p, k in zip(found.paths, keep, strict=True) if k],
                         [a for a, k in zip(found.labels, keep, strict=True) if k], split=split, subset=None,
                         classes=label_set("basic8"), config=config, image_size=image_size)

    def __getitem__(self, i: int) -> dict:
        item = super().__getitem__(i)
        item["subject"] = self.subjects[i]
        return item

    def _read(self, i: int) -> np.ndarray:
        """Frame ``i``, cropped to its largest face when ``crop_face`` (the centre square, recorded in
        ``no_face``, if none is found)."""
        rgb = load_image(self.paths[i])
        if not self.crop_face:
            return rgb
        face = faces(rgb, "largest", whole_image_if_none=True, min_size=round(MIN_FACE * min(rgb.shape[:2])))[0]
        if face.whole_image:
            self.no_face.add(self.paths[i])
        return face.crop


_OPTIONS = ("last_frames", "neutral_first", "folds", "fold", "crop_face", "image_size")


@register_dataset("ckplus", description="CK+ (Extended Cohn-Kanade): 593 posed sequences of 123 subjects, 327 "
                  "labelled with 8 classes (with contempt); the last frames of each labelled sequence "
                  "(last_frames=3), faces cropped, subject-independent 10-fold cross-validation (fold=k: test fold "
                  "k, val fold k+1, train the rest). " + OBTAIN, needs_root=True,
                  options=_OPTIONS, classes=label_set("basic8"))
def build_ckplus(root=None, split="train", subset=None, **options):
    return CKPlus(root, split, subset, **options)
