"""AffectNet (Mollahosseini et al. 2017), manually annotated part: 7- or 8-class in-the-wild faces, CSV release.

Layout under ``root``: ``Manually_Annotated_file_lists/training.csv`` and ``.../validation.csv`` with the header
``subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal``
(``facial_landmarks`` is one field of ``;``-separated numbers, kept unparsed), and the images, which vary in size, at
``Manually_Annotated_Images/<subDirectory_filePath>`` (e.g. ``689/737db...ca.jpg``). Expression codes 0-10 are
neutral, happiness, sadness, surprise, fear, disgust, anger, contempt, none, uncertain, no-face; codes 0-7 map to
the canonical order of :mod:`fer_core.labels`. AffectNet is obtained on request from its authors:
https://www.mohammadmahoor.com/pages/databases/affectnet/.

Splits: ``test`` is ``validation.csv``, the official validation set, on which every paper reports (the authors
keep their test set). ``val`` is a deterministic held-out share of the rows of ``training.csv`` (``val_fraction``,
default 0.1, chosen by a permutation seeded with ``seed`` over all its rows, before any row is dropped, so the
7-class ``val`` is the 8-class ``val`` without contempt), and ``train`` is the rest: the two never overlap.

Protocols (option ``classes``): 7 keeps codes 0-6 (``basic7``), 8 keeps codes 0-7 (``basic8``, with contempt).
The other rows are dropped by the published rule and counted per reason in ``dropped`` for the split
(``contempt`` under the 7-class protocol, ``none``, ``uncertain``, ``no_face``), never silently. ``valence`` and
``arousal`` (float32) and ``image_names`` (the ``subDirectory_filePath`` strings) follow the kept samples.

Images are used as released (as the reference implementations do) and resized to ``image_size`` (default 224) on
load; ``crop_face=True`` first crops each image to its CSV face box (``face_x, face_y, face_width, face_height``).

Subsets ``occlusion``, ``pose30``, ``pose45`` are read from RAN's list files given as options (``occlusion_list``,
``pose30_list``, ``pose45_list``; without an option, ``<root>/subsets/<subset>.txt`` where it exists; see
:mod:`fer_core.data.subsets`), matched on the image stem (the file name without folder or extension) among the kept
samples of the split. Entries that match none are kept in ``unmatched``; repeated entries are counted in
``duplicates``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer_core.data.registry import register_dataset
from fer_core.labels import DATASET_ORDERS, label_set, mapping_from

from .imagefolder import FileFaceDataset, check_fraction, check_split, holdout_mask, require_images
from .subsets import (
    RAN_LIST_NAMES,
    SUBSET_OPTIONS,
    check_subset,
    image_stem,
    match_subset,
    read_subset_list,
    with_default_lists,
)

RAN_LIST_FILES = {subset: (file,) for subset, file in RAN_LIST_NAMES["affectnet"].items()}
"""Subset -> RAN's published list file, looked for after ``subsets/<subset>.txt`` (:func:`with_default_lists`)."""

LIST_DIR = Path("Manually_Annotated_file_lists")
IMAGE_DIR = Path("Manually_Annotated_Images")
SPLIT_FILES = {"train": "training.csv", "val": "training.csv", "test": "validation.csv"}
HEADER = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
          "expression", "valence", "arousal")
CODES = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt", "none", "uncertain",
         "no_face")
"""AffectNet's expression codes 0-10, in the names used for drop reasons."""
PROTOCOLS = {7: "basic7", 8: "basic8"}
DROP_REASONS = {"contempt": 7, "none": 8, "uncertain": 9, "no_face": 10}
"""Drop reason -> the expression code it counts (contempt only under the 7-class protocol)."""
OBTAIN = ("AffectNet is obtained on request from its authors: "
          "https://www.mohammadmahoor.com/pages/databases/affectnet/")
_CODE_TO_CLASS = np.asarray(mapping_from(DATASET_ORDERS["affectnet"]), np.int64)  # code 0..7 -> canonical index


@dataclass
class AffectNetTable:
    """The rows of one AffectNet CSV: ``names`` (``subDirectory_filePath``), ``boxes`` int64 (N, 4) as
    ``(x, y, width, height)``, ``codes`` int64 (N,) in 0-10, ``valence`` and ``arousal`` float32 (N,)."""

    names: list[str]
    boxes: np.ndarray
    codes: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray


def read_csv(path: Path) -> AffectNetTable:
    """Parse an AffectNet CSV (UTF-8 BOM and CRLF tolerated, blank lines skipped); ValueError naming the file and
    line for a wrong header, a wrong field count, an expression that is not an integer 0-10, or a non-numeric box,
    valence or arousal."""
    names, boxes, codes, valence, arousal = [], [], [], [], []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = tuple(h.strip() for h in next(reader, []))
        if header != HEADER:
            raise ValueError(f"{path}: line 1: expected the header {','.join(HEADER)!r}, got {','.join(header)!r}")
        for row in reader:
            if len(row) != len(HEADER):
                if not row:
                    continue
                raise ValueError(f"{path}: line {reader.line_num}: expected {len(HEADER)} fields "
                                 f"({','.join(HEADER)}), got {len(row)}")
            try:  # the fast path: the release writes integer boxes
                code, box = int(row[6]), (int(row[1]), int(row[2]), int(row[3]), int(row[4]))
                values = float(row[7]), float(row[8])
            except ValueError:
                code, box, values = _parse_numbers(row, f"{path}: line {reader.line_num}")
            if not 0 <= code <= 10:
                raise ValueError(f"{path}: line {reader.line_num}: expression must be an integer 0-10 "
                                 f"({', '.join(CODES)}), got {code}")
            names.append(row[0].strip())
            codes.append(code)
            boxes.extend(box)
            valence.append(values[0])
            arousal.append(values[1])
    return AffectNetTable(names, np.asarray(boxes, np.int64).reshape(-1, 4), np.asarray(codes, np.int64),
                          np.asarray(valence, np.float32), np.asarray(arousal, np.float32))


def _parse_numbers(row: list[str], where: str) -> tuple[int, tuple[int, ...], tuple[float, float]]:
    """The slow path of :func:`read_csv`: boxes written as decimals are rounded; anything else is an error."""
    try:
        code = int(row[6])
    except ValueError:
        raise ValueError(f"{where}: expression must be an integer 0-10, got {row[6]!r}") from None
    try:
        box = tuple(int(round(float(v))) for v in row[1:5])
    except (ValueError, OverflowError):
        raise ValueError(f"{where}: face_x, face_y, face_width, face_height must be numbers, got "
                         f"{','.join(row[1:5])!r}") from None
    try:
        return code, box, (float(row[7]), float(row[8]))
    except ValueError:
        raise ValueError(f"{where}: valence and arousal must be numbers, got {row[7]!r}, {row[8]!r}") from None


def protocol_classes(classes: int = 7, **_: object) -> tuple[str, ...]:
    """The class names of the 7- or 8-class protocol (option ``classes``)."""
    return label_set(PROTOCOLS[check_protocol(classes)])


def check_protocol(classes) -> int:
    if isinstance(classes, bool) or classes not in tuple(PROTOCOLS):
        raise ValueError(f"classes must be 7 (basic expressions) or 8 (with contempt), got {classes!r}")
    return int(classes)


class AffectNet(FileFaceDataset):
    """AffectNet, manually annotated part (see the module docstring). Options: ``classes`` (7 or 8, default 7),
    ``crop_face`` (False), ``val_fraction`` (0.1), ``seed`` (0), ``occlusion_list``, ``pose30_list``,
    ``pose45_list`` (paths of RAN's list files, enabling those subsets), ``image_size`` (224; None keeps the
    released sizes, which then must all agree)."""

    name = "affectnet"

    def __init__(self, root, split: str = "train", subset: str | None = None, *, classes: int = 7,
                 crop_face: bool = False, val_fraction: float = 0.1, seed: int = 0, occlusion_list=None,
                 pose30_list=None, pose45_list=None, image_size: int | None = 224):
        check_split(self.name, split)
        protocol = check_protocol(classes)
        if not isinstance(crop_face, bool):
            raise ValueError(f"crop_face must be true or false, got {crop_face!r}")
        root = Path(root)
        lists = with_default_lists(root, {"occlusion": occlusion_list, "pose30": pose30_list,
                                          "pose45": pose45_list}, RAN_LIST_FILES)
        self.subsets = tuple(s for s, p in lists.items() if p is not None)
        subset = check_subset(self.name, subset, lists)
        csv_path, image_dir = root / LIST_DIR / SPLIT_FILES[split], root / IMAGE_DIR
        missing = [str(p) for p in (csv_path, image_dir) if not p.exists()]
        if missing:
            raise FileNotFoundError(f"AffectNet not found under {root}: missing {' and '.join(missing)}; expected "
                                    f"{LIST_DIR / 'training.csv'}, {LIST_DIR / 'validation.csv'} and "
                                    f"{IMAGE_DIR}/<subDirectory_filePath>. {OBTAIN}")
        table = read_csv(csv_path)
        in_split = np.ones(len(table.names), bool)
        if split != "test":
            held = holdout_mask(len(table.names), check_fraction(val_fraction), seed)
            in_split = held if split == "val" else ~held
        codes = table.codes
        self.dropped = {reason: int(np.sum(in_split & (codes == code))) if code >= protocol else 0
                        for reason, code in DROP_REASONS.items()}
        index = np.flatnonzero(in_split & (codes < protocol))
        names = [table.names[i] for i in index]
        require_images(image_dir, names, csv_path)
        self.unmatched: list[str] = []
        self.duplicates = 0
        if subset is not None:
            match = match_subset([image_stem(n) for n in names], read_subset_list(lists[subset]))
            self.unmatched, self.duplicates = match.unmatched, match.duplicates
            index = index[np.asarray(match.keep, bool)]
            self.split_positions = np.flatnonzero(match.keep)
            names = [table.names[i] for i in index]
        self.image_names = names
        self.valence = table.valence[index]
        self.arousal = table.arousal[index]
        boxes = [tuple(b) for b in table.boxes[index].tolist()] if crop_face else None
        config = {"root": str(root), "classes": protocol, "crop_face": crop_face, "val_fraction": val_fraction,
                  "seed": seed, **{SUBSET_OPTIONS[s]: None if p is None else str(p) for s, p in lists.items()}}
        prefix = f"{image_dir}{os.sep}"  # joined as text: Path's own join costs seconds for 400k names
        super().__init__([prefix + n for n in names], _CODE_TO_CLASS[codes[index]], split=split, subset=subset,
                         classes=label_set(PROTOCOLS[protocol]), config=config, image_size=image_size, boxes=boxes)


_OPTIONS = ("classes", "crop_face", "val_fraction", "seed", "occlusion_list", "pose30_list", "pose45_list",
            "image_size")


@register_dataset("affectnet", description="AffectNet (manually annotated): ~420k in-the-wild faces of varied "
                  "sizes, 7-class (classes=7) or 8-class with contempt (classes=8) protocols, other codes dropped "
                  "and counted; test = the official validation set, val held out of training.csv; optional crop "
                  "to the CSV face box; subsets occlusion/pose30/pose45 from RAN's lists. " + OBTAIN,
                  needs_root=True, options=_OPTIONS, classes=protocol_classes)
def build_affectnet(root=None, split="train", subset=None, **options):
    return AffectNet(root, split, subset, **options)
