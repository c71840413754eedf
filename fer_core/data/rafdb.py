"""RAF-DB basic emotions (aligned 100 x 100 faces) and RAN's challenge-condition subsets.

Layout under ``root``: ``EmoLabel/list_patition_label.txt`` (lines ``train_00001.jpg 5``; codes 1-7 = surprise,
fear, disgust, happiness, sadness, anger, neutral, mapped to the canonical order of :mod:`fer_core.labels`) and
``Image/aligned/<stem>_aligned.jpg``. Splits ``train`` and ``test`` come from the name prefix. RAF-DB has no
validation split: ``val`` is a deterministic held-out share of ``train`` (``val_fraction``, default 0.1, chosen
by a permutation seeded with ``seed``), and ``train`` is the rest, so the two never overlap.
RAF-DB is obtained by request from its authors: http://www.whdeng.cn/raf/model1.html.

Subsets ``occlusion``, ``pose30``, ``pose45`` are read from RAN's list files (``occlusion``: lines
``test_0003_aligned 3 4``; ``pose30`` / ``pose45``: lines ``0/test_0004_aligned.jpg``), matched on the image stem
(``test_0003``). Entries that match no image of the split are kept in ``unmatched``; repeated entries are counted in
``duplicates``. Each subset's list is the first of, in this order:

1. the option ``occlusion_list`` / ``pose30_list`` / ``pose45_list`` (a path; nothing else is looked at);
2. ``<root>/subsets/occlusion.txt`` / ``pose30.txt`` / ``pose45.txt`` (FER Lab's names, shared by every data set);
3. RAN's published file name, ``rafdb_occlusion_list.txt`` / ``val_raf_db_list.txt`` (pose > 30) /
   ``val_raf_db_list_45.txt`` (pose > 45), in ``<root>/subsets/``, then in ``<root>/`` (where
   ``python -m fer_core data export synthfaces`` writes them);
4. ``occlusion_list.txt`` / ``pose_30_list.txt`` / ``pose_45_list.txt`` in ``<root>/subsets/``, then in ``<root>/``
   (the names earlier FER Lab exports wrote).

A subset whose list is found nowhere is not offered (``subsets`` lists those that are).
"""

from __future__ import annotations

import re
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

LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"
IMAGE_DIR = Path("Image") / "aligned"
OBTAIN = "RAF-DB is obtained by request from its authors: http://www.whdeng.cn/raf/model1.html"
_CODE_TO_CLASS = mapping_from(DATASET_ORDERS["rafdb"])  # code c (1..7) -> canonical _CODE_TO_CLASS[c - 1]
LIST_FILES = {subset: (RAN_LIST_NAMES["rafdb"][subset], old) for subset, old in
              (("occlusion", "occlusion_list.txt"), ("pose30", "pose_30_list.txt"), ("pose45", "pose_45_list.txt"))}
"""Subset -> the list file names looked for in the data set's folder after ``subsets/<subset>.txt``: RAN's published
name, then the name older FER Lab exports wrote (see the module docstring for the order)."""
_LINE = re.compile(r"^(?P<name>(?P<split>train|test)_\d+\.(?:jpg|jpeg|png))\s+(?P<code>[1-7])$", re.IGNORECASE)


def read_labels(path: Path) -> list[tuple[str, str, int]]:
    """``(stem, split, canonical label)`` of every line of the RAF-DB label file; ValueError naming a bad line."""
    out = []
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            m = _LINE.match(line)
            if m is None:
                raise ValueError(f"{path} line {n}: expected '<train|test>_<number>.jpg <label 1-7>', got {line!r}")
            out.append((image_stem(m["name"]), m["split"].lower(), _CODE_TO_CLASS[int(m["code"]) - 1]))
    return out


class RAFDB(FileFaceDataset):
    """RAF-DB basic (see the module docstring). Options: ``val_fraction`` (0.1), ``seed`` (0),
    ``occlusion_list``, ``pose30_list``, ``pose45_list`` (paths of RAN's list files, enabling those subsets; by
    default found in ``root`` as the module docstring says), ``image_size`` (resize on load; the aligned images are
    100 x 100)."""

    name = "rafdb"

    def __init__(self, root, split: str = "train", subset: str | None = None, *, val_fraction: float = 0.1,
                 seed: int = 0, occlusion_list=None, pose30_list=None, pose45_list=None, image_size: int | None = None):
        check_split(self.name, split)
        root = Path(root)
        lists = with_default_lists(root, {"occlusion": occlusion_list, "pose30": pose30_list,
                                          "pose45": pose45_list}, LIST_FILES)
        self.subsets = tuple(s for s, p in lists.items() if p is not None)
        subset = check_subset(self.name, subset, lists)
        label_path, image_dir = root / LABEL_FILE, root / IMAGE_DIR
        missing = [str(p) for p in (label_path, image_dir) if not p.exists()]
        if missing:
            raise FileNotFoundError(f"RAF-DB not found under {root}: missing {' and '.join(missing)}; expected "
                                    f"{LABEL_FILE} and {IMAGE_DIR}/<name>_aligned.jpg. {OBTAIN}")
        rows = [r for r in read_labels(label_path) if r[1] == ("train" if split == "val" else split)]
        if split != "test":
            held = holdout_mask(len(rows), check_fraction(val_fraction), seed)
            rows = [r for r, h in zip(rows, held, strict=True) if h == (split == "val")]
        require_images(image_dir, [f"{stem}_aligned.jpg" for stem, _, _ in rows], label_path)
        self.unmatched: list[str] = []
        self.duplicates = 0
        if subset is not None:
            match = match_subset([r[0] for r in rows], read_subset_list(lists[subset]))
            self.unmatched, self.duplicates = match.unmatched, match.duplicates
            rows = [r for r, k in zip(rows, match.keep, strict=True) if k]
            self.split_positions = np.flatnonzero(match.keep)
        config = {"root": str(root), "val_fraction": val_fraction, "seed": seed,
                  **{SUBSET_OPTIONS[s]: None if p is None else str(p) for s, p in lists.items()}}
        super().__init__([image_dir / f"{stem}_aligned.jpg" for stem, _, _ in rows], [r[2] for r in rows],
                         split=split, subset=subset, classes=label_set("basic7"), config=config,
                         image_size=image_size)


_OPTIONS = ("val_fraction", "seed", "occlusion_list", "pose30_list", "pose45_list", "image_size")


@register_dataset("rafdb", description="RAF-DB basic: 15,339 aligned 100x100 in-the-wild faces, 7 classes (train/"
                  "test; val held out of train); subsets occlusion/pose30/pose45 from RAN's lists. "
                  + OBTAIN, needs_root=True, options=_OPTIONS, classes=label_set("basic7"))
def build_rafdb(root=None, split="train", subset=None, **options):
    return RAFDB(root, split, subset, **options)
