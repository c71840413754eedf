"""FERPlus (Barsoum et al. 2016): FER2013's images relabelled by 10 taggers, 8 classes including contempt.

``root`` holds ``fer2013.csv`` (the pixels, parsed through :mod:`fer_core.data.fer2013`'s cache) and
``fer2013new.csv`` (``Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF``),
row-aligned with it. Modes:

- ``majority`` (default, the published rule): votes of 1 are zeroed as noise; the top class is kept only if it has
  more than half of the remaining votes, else the row is dropped (``no_majority``); rows whose top class is
  ``unknown`` or ``NF`` are dropped (``unknown_or_nf``).
- ``probability``: the label is the arg-max (first on ties) of the raw vote vector; rows whose top vote is
  ``unknown``/``NF`` or with no emotion votes are dropped (``unknown_or_nf``).

In both modes rows with an empty image name are dropped (``empty_name``); ``dropped`` counts each reason for the
split. ``label_dists`` is always the normalised raw vote vector over the 8 emotions, in canonical class order.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..labels import CLASSES, DATASET_ORDERS, LABEL_SETS, mapping_from
from . import register_dataset
from .fer2013 import SPLIT_USAGE, USAGES, GreyFaces, _check_split, csv_path, load_fer2013_csv

__all__ = ["FERPlus", "read_votes", "MODES"]

MODES = ("majority", "probability")
VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")
DROP_REASONS = ("empty_name", "no_majority", "unknown_or_nf")
FERPLUS_URL = "https://github.com/microsoft/FERPlus (fer2013new.csv)"


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

    def __init__(self, root, split: str = "train", subset=None, mode: str = "majority", cache_dir=None):
        _check_split("ferplus", split, subset)
        if mode not in MODES:
            raise ValueError(f"ferplus: unknown mode {mode!r}; valid: {', '.join(MODES)}")
        pixels_csv = csv_path(root)
        votes_csv = Path(root).expanduser() / "fer2013new.csv"
        if not votes_csv.is_file():
            raise FileNotFoundError(f"FERPlus labels not found: expected {votes_csv}. Get fer2013new.csv from "
                                    f"{FERPLUS_URL} and put it beside fer2013.csv")
        pixels, _, usage = load_fer2013_csv(pixels_csv, cache_dir)
        vote_usage, votes, names = read_votes(votes_csv)
        if len(vote_usage) != len(usage):
            raise ValueError(f"{votes_csv} has {len(vote_usage)} rows but {pixels_csv} has {len(usage)}: "
                             "the two files must be row-aligned")
        mismatch = np.flatnonzero(vote_usage != usage)
        if mismatch.size:
            raise ValueError(f"{votes_csv}: line {mismatch[0] + 2}: Usage {USAGES[vote_usage[mismatch[0]]]!r} "
                             f"differs from {pixels_csv}'s {USAGES[usage[mismatch[0]]]!r} (files not row-aligned)")
        own, reason = (majority_labels if mode == "majority" else probability_labels)(votes)
        reason = np.where(np.asarray([not n for n in names], bool), "empty_name", reason)
        in_split = usage == USAGES.index(SPLIT_USAGE[split])
        keep = in_split & (reason == "")
        self.dropped = {r: int(np.sum(in_split & (reason == r))) for r in DROP_REASONS}

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
        self.config = {"root": str(root), "mode": mode, "cache_dir": None if cache_dir is None else str(cache_dir)}


@register_dataset("ferplus", description="FERPlus: FER2013 images relabelled by 10 taggers, 8 classes with "
                  "contempt, majority or probability labels and vote distributions; root holds fer2013.csv and "
                  "fer2013new.csv", needs_root=True)
def _ferplus(root=None, split="train", subset=None, **options):
    unknown = set(options) - {"mode", "cache_dir"}
    if unknown:
        raise ValueError(f"ferplus: unknown options {sorted(unknown)}; valid: mode, cache_dir")
    return FERPlus(root, split=split, subset=subset, **options)
