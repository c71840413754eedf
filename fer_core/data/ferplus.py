"""FERPlus (Barsoum et al. 2016): FER2013's images relabelled by 10 taggers, 8 classes including contempt.

Two published layouts are read from ``root``:

- the CSV release: ``fer2013.csv`` (the pixels, parsed through :mod:`fer_core.data.fer2013`'s cache) and
  ``fer2013new.csv`` (``Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF``),
  row-aligned with it;
- the image-folder release written by the FERPlus repository's ``generate_training_data.py``: ``FER2013Train/``,
  ``FER2013Valid/`` and ``FER2013Test/``, each with the 48x48 PNGs and a header-less ``label.csv`` of lines
  ``fer0000000.png,"(0, 0, 48, 48)",4,0,0,1,3,2,0,0,0,0`` (image, face box, the 10 vote counts).

Modes:

- ``majority`` (default, the published rule): votes of 1 are zeroed as noise; the top class is kept only if it has
  more than half of the remaining votes, else the row is dropped (``no_majority``); rows whose top class is
  ``unknown`` or ``NF`` are dropped (``unknown_or_nf``).
- ``probability``: the label is the arg-max (first on ties) of the raw vote vector; rows whose top vote is
  ``unknown``/``NF`` or with no emotion votes are dropped (``unknown_or_nf``).

In both modes rows with an empty image name are dropped (``empty_name``); ``dropped`` counts each reason for the
split. ``label_dists`` is always the normalised raw vote vector over the 8 emotions, in canonical class order.

Subsets ``occlusion``, ``pose30``, ``pose45`` come from RAN's FERPlus lists (options ``occlusion_list``,
``pose30_list``, ``pose45_list``; lines ``1_fer0034656.png 8 0`` and ``0/fer0032226.jpg``, all FER2013 test images),
matched on the ``fer<number>`` part of the image name; ``unmatched`` and ``duplicates`` report what did not match
(:mod:`fer_core.data.subsets`).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import cv2
import numpy as np

from fer_core.data.registry import register_dataset

from ..labels import CLASSES, DATASET_ORDERS, LABEL_SETS, mapping_from
from .fer2013 import IMAGE_SIZE, SPLIT_USAGE, USAGES, GreyFaces, _check_split, csv_path, load_fer2013_csv
from .imagefolder import require_images
from .subsets import RAN_LIST_NAMES, SUBSET_OPTIONS, check_subset, match_subset, read_subset_list, with_default_lists

RAN_LIST_FILES = {subset: (file,) for subset, file in RAN_LIST_NAMES["ferplus"].items()}
"""Subset -> RAN's published list file, looked for after ``subsets/<subset>.txt`` (:func:`with_default_lists`)."""

__all__ = ["FERPlus", "read_votes", "MODES"]

MODES = ("majority", "probability")
VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")
DROP_REASONS = ("empty_name", "no_majority", "unknown_or_nf")
FERPLUS_URL = "https://github.com/microsoft/FERPlus (fer2013new.csv)"
SPLIT_FOLDERS = {"train": "FER2013Train", "val": "FER2013Valid", "test": "FER2013Test"}
_FER_NAME = re.compile(r"fer\d+", re.IGNORECASE)


def ferplus_stem(entry: str) -> str:
    """``1_fer0034656.png`` / ``0/fer0032226.jpg`` / ``fer0032226.png`` -> ``fer0032226`` (the entry itself when it
    holds no ``fer<number>``)."""
    name = entry.replace("\\", "/").rsplit("/", 1)[-1]
    found = _FER_NAME.search(name)
    return found.group(0).lower() if found else name


def read_votes(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Parse ``fer2013new.csv``: usage codes (N,), votes int64 (N, 10) in file column order, image names.
    ValueError naming the file and line for any malformed row."""
    usages, votes, names = [], [], []
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        expected = ["Usage", "Image name", *VOTE_COLUMNS]
        if header != expected:
            raise ValueError(f"{path}: line 1: expected header {','.join(expected)!r}, got {','.join(header)!r}")
        for row in reader:
            where = f"{path}: line {reader.line_num}"
            if not row:
                continue
            if len(row) != len(expected):
                raise ValueError(f"{where}: expected {len(expected)} fields, got {len(row)}")
            usage = row[0].strip()
            if usage not in USAGES:
                raise ValueError(f"{where}: unknown Usage {usage!r} (expected one of {', '.join(USAGES)})")
            try:
                counts = [int(v) for v in row[2:]]
            except ValueError:
                raise ValueError(f"{where}: vote counts must be non-negative integers") from None
            if min(counts) < 0:
                raise ValueError(f"{where}: vote counts must be non-negative integers")
            usages.append(USAGES.index(usage))
            votes.append(counts)
            names.append(row[1].strip())
    return np.asarray(usages, np.int64), np.asarray(votes, np.int64).reshape(-1, len(VOTE_COLUMNS)), names


def read_folder_split(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One split of the image-folder release: pixels uint8 (N, 48, 48), votes int64 (N, 10), image names.
    Errors name ``label.csv``'s line, or the missing or wrongly sized images."""
    label_csv = folder / "label.csv"
    votes, names = [], []
    with label_csv.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        for row in reader:
            where = f"{label_csv}: line {reader.line_num}"
            if not row:
                continue
            if len(row) != 2 + len(VOTE_COLUMNS):
                raise ValueError(f"{where}: expected {2 + len(VOTE_COLUMNS)} fields (image name, face box, "
                                 f"{len(VOTE_COLUMNS)} vote counts), got {len(row)}")
            try:
                counts = [int(v) for v in row[2:]]
            except ValueError:
                raise ValueError(f"{where}: vote counts must be non-negative integers") from None
            if min(counts) < 0 or not row[0].strip():
                raise ValueError(f"{where}: vote counts must be non-negative integers and the image name non-empty")
            votes.append(counts)
            names.append(row[0].strip())
    require_images(folder, names, label_csv)
    pixels = np.empty((len(names), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for i, name in enumerate(names):
        grey = cv2.imread(str(folder / name), cv2.IMREAD_GRAYSCALE)
        if grey is None or grey.shape != (IMAGE_SIZE, IMAGE_SIZE):
            got = "unreadable" if grey is None else f"{grey.shape[1]}x{grey.shape[0]}"
            raise ValueError(f"{folder / name}: expected a {IMAGE_SIZE}x{IMAGE_SIZE} image, got {got}")
        pixels[i] = grey
    return pixels, np.asarray(votes, np.int64).reshape(-1, len(VOTE_COLUMNS)), names


def majority_labels(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The published majority rule on (N, 10) votes: own-order label (N,) and drop reason (N,) ('' = kept)."""
    cleaned = np.where(votes <= 1, 0, votes)
    top = cleaned.argmax(1)
    best = cleaned.max(1)
    has_majority = best * 2 > cleaned.sum(1)
    reason = np.where(~has_majority, "no_majority", np.where(top >= 8, "unknown_or_nf", ""))
    return top, reason


def probability_labels(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Arg-max of the raw votes; rows led by unknown/NF or without emotion votes are dropped."""
    top = votes.argmax(1)
    bad = (top >= 8) | (votes[:, :8].sum(1) == 0)
    return top, np.where(bad, "unknown_or_nf", "")


class FERPlus(GreyFaces):
    """One split of FERPlus; 8 classes in canonical (``basic8``) order, soft labels in ``label_dists``."""

    name = "ferplus"

    def __init__(self, root, split: str = "train", subset=None, mode: str = "majority", cache_dir=None,
                 occlusion_list=None, pose30_list=None, pose45_list=None):
        _check_split("ferplus", split, None)
        lists = with_default_lists(root, {"occlusion": occlusion_list, "pose30": pose30_list,
                                          "pose45": pose45_list}, RAN_LIST_FILES)
        subset = check_subset("ferplus", subset, lists)
        if mode not in MODES:
            raise ValueError(f"ferplus: unknown mode {mode!r}; valid: {', '.join(MODES)}")
        root = Path(root).expanduser()
        votes_csv = root / "fer2013new.csv"
        folder = root / SPLIT_FOLDERS[split]
        if votes_csv.is_file():
            pixels, votes, names = self._read_csv_release(root, votes_csv, split, cache_dir)
            self.layout = "csv"
        elif (root / SPLIT_FOLDERS["train"] / "label.csv").is_file() or (folder / "label.csv").is_file():
            if not (folder / "label.csv").is_file():
                raise FileNotFoundError(f"FERPlus image-folder release under {root} lacks {folder / 'label.csv'}")
            pixels, votes, names = read_folder_split(folder)
            self.layout = "folders"
        else:
            raise FileNotFoundError(
                f"FERPlus not found under {root}: expected fer2013.csv and fer2013new.csv (the CSV release), or "
                f"{', '.join(SPLIT_FOLDERS.values())} folders each with label.csv (the image-folder release). Get "
                f"fer2013new.csv from {FERPLUS_URL}, and fer2013.csv from the Kaggle FER2013 challenge")
        own, reason = (majority_labels if mode == "majority" else probability_labels)(votes)
        reason = np.where(np.asarray([not n for n in names], bool), "empty_name", reason)
        keep = reason == ""
        self.dropped = {r: int(np.sum(reason == r)) for r in DROP_REASONS}
        self.subsets = tuple(s for s, p in lists.items() if p is not None)
        self.unmatched: list[str] = []
        self.duplicates = 0
        if subset is not None:
            match = match_subset([ferplus_stem(n) for n in names], read_subset_list(lists[subset], ferplus_stem))
            self.unmatched, self.duplicates = match.unmatched, match.duplicates
            self.split_positions = np.flatnonzero(np.asarray(match.keep, bool)[keep])
            keep &= np.asarray(match.keep, bool)

        order = DATASET_ORDERS["ferplus"]
        mapping = np.asarray(mapping_from(order), np.int64)
        emo = votes[keep][:, :8].astype(np.float32)
        dists = np.zeros((len(emo), len(CLASSES)), np.float32)
        dists[:, mapping] = emo
        total = dists.sum(1, keepdims=True)
        self.split, self.subset, self.mode = split, subset, mode
        self.classes = LABEL_SETS["basic8"]
        self.num_classes = len(self.classes)
        self._pixels = pixels[keep]
        self.labels = mapping[own[keep]]
        self.label_dists = np.divide(dists, total, out=np.zeros_like(dists), where=total > 0)
        self.image_names = [n for n, k in zip(names, keep, strict=True) if k]
        self.config = {"root": str(root), "mode": mode, "cache_dir": None if cache_dir is None else str(cache_dir),
                       **{SUBSET_OPTIONS[s]: None if p is None else str(p) for s, p in lists.items()}}

    @staticmethod
    def _read_csv_release(root: Path, votes_csv: Path, split: str, cache_dir):
        """Pixels, votes and names of one split of the CSV release, after checking the two files are aligned."""
        pixels_csv = csv_path(root)
        pixels, _, usage = load_fer2013_csv(pixels_csv, cache_dir)
        vote_usage, votes, names = read_votes(votes_csv)
        if len(vote_usage) != len(usage):
            raise ValueError(f"{votes_csv} has {len(vote_usage)} rows but {pixels_csv} has {len(usage)}: "
                             "the two files must be row-aligned")
        mismatch = np.flatnonzero(vote_usage != usage)
        if mismatch.size:
            raise ValueError(f"{votes_csv}: line {mismatch[0] + 2}: Usage {USAGES[vote_usage[mismatch[0]]]!r} "
                             f"differs from {pixels_csv}'s {USAGES[usage[mismatch[0]]]!r} (files not row-aligned)")
        in_split = usage == USAGES.index(SPLIT_USAGE[split])
        return pixels[in_split], votes[in_split], [n for n, k in zip(names, in_split, strict=True) if k]


_OPTIONS = ("mode", "cache_dir", "occlusion_list", "pose30_list", "pose45_list")


@register_dataset("ferplus", description="FERPlus: FER2013 images relabelled by 10 taggers, 8 classes with "
                  "contempt, majority or probability labels and vote distributions; root holds fer2013.csv and "
                  "fer2013new.csv, or the FER2013Train/Valid/Test image folders; subsets occlusion/pose30/pose45 "
                  "from RAN's lists. Labels: " + FERPLUS_URL, needs_root=True, options=_OPTIONS,
                  classes=LABEL_SETS["basic8"])
def _ferplus(root=None, split="train", subset=None, **options):
    return FERPlus(root, split=split, subset=subset, **options)
