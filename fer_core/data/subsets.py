"""Challenge-condition subsets from RAN's list files (Wang et al. 2020), shared by every real data set.

RAN released, for RAF-DB, FERPlus and AffectNet test images, lists of the faces with occlusion and with a head pose
above 30 and 45 degrees. Their lines differ per data set (``test_0003_aligned 3 4``, ``0/test_0004_aligned.jpg``,
``1_fer0034656.png 8 0``, ``0/fer0032226.jpg``): the first field names an image, and everything else is ignored.
Entries are matched on the image *stem* (folder, extension and a ``_aligned`` suffix removed); entries that match no
image of the split are reported in ``unmatched`` and repeated entries counted in ``duplicates``, never dropped
silently.

The list files are given as options (``occlusion_list=...``); a data set folder may also carry them, and then a
config needs no more than the data set's name. Where an option is not given, the first file found is used
(:func:`with_default_lists`): ``<root>/subsets/occlusion.txt``, ``pose30.txt``, ``pose45.txt`` (FER Lab's own
names, every data set), then the names a loader passes on, in ``<root>/subsets/`` and then ``<root>/``: RAF-DB
passes the file names RAN published (:data:`RAN_LIST_NAMES`: ``rafdb_occlusion_list.txt``,
``val_raf_db_list.txt``, ``val_raf_db_list_45.txt``), which are also what ``data export synthfaces`` writes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SUBSET_OPTIONS = {"occlusion": "occlusion_list", "pose30": "pose30_list", "pose45": "pose45_list"}
"""Subset name -> the data set option holding the path of its list file."""


def image_stem(entry: str) -> str:
    """``0/test_0004_aligned.jpg`` / ``test_0003_aligned`` / ``test_0003.jpg`` -> ``test_0003``."""
    name = entry.replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"\.(jpg|jpeg|png|bmp)$", "", name, flags=re.IGNORECASE)
    return re.sub(r"_aligned$", "", name)


def read_subset_list(path, stem: Callable[[str], str] = image_stem) -> list[str]:
    """Stems of a list file's entries (first field of each line; CRLF, BOM and blank lines tolerated), in order."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no such subset list file: {path}")
    with open(path, encoding="utf-8-sig") as f:
        return [stem(line.split()[0]) for line in f if line.strip()]


@dataclass
class SubsetMatch:
    """Which samples of a split a list selects: ``keep`` (one bool per sample), the list entries that matched no
    sample (``unmatched``, sorted, unique) and how many entries repeat an earlier one (``duplicates``)."""

    keep: list[bool]
    unmatched: list[str] = field(default_factory=list)
    duplicates: int = 0


def match_subset(stems: Sequence[str], entries: Sequence[str]) -> SubsetMatch:
    """Match list ``entries`` (stems) against the ``stems`` of a split's samples."""
    wanted = set(entries)
    have = set(stems)
    return SubsetMatch(keep=[s in wanted for s in stems], unmatched=sorted(wanted - have),
                       duplicates=len(entries) - len(wanted))


SUBSET_FOLDER = "subsets"

RAN_LIST_NAMES: dict[str, dict[str, str]] = {
    "rafdb": {"occlusion": "rafdb_occlusion_list.txt", "pose30": "val_raf_db_list.txt",
              "pose45": "val_raf_db_list_45.txt"},
    "ferplus": {"occlusion": "jianfei_occlusion_list.txt", "pose30": "pose_30_ferplus_list.txt",
                "pose45": "pose_45_ferplus_list.txt"},
    "affectnet": {"occlusion": "occlusion_affectnet_list.txt", "pose30": "pose_30_affectnet_list.txt",
                  "pose45": "pose_45_affectnet_list.txt"},
}
"""The names of RAN's list files as published (github.com/kaiwang960112/Challenge-condition-FER-dataset, folders
``RAF_DB_dir/``, ``FERplus_dir/``, ``AffectNet_dir/``), per data set and subset. RAF-DB's: 735 occlusion lines
(CRLF), 1,247 pose > 30 and 558 pose > 45 lines."""


def with_default_lists(root, lists: dict[str, object],
                       names: Mapping[str, Sequence[str]] | None = None) -> dict[str, object]:
    """``lists`` (subset -> list path or None) with each missing path filled from the data set's folder ``root``:
    the first existing file of ``<root>/subsets/<subset>.txt``, then each name of ``names[subset]`` in turn (e.g.
    RAN's published file name) in ``<root>/subsets/`` and then in ``<root>/``. A path given stays, even if another
    file exists."""
    root = Path(root).expanduser()
    folder = root / SUBSET_FOLDER
    out: dict[str, object] = {}
    for subset, path in lists.items():
        if path is None:
            extra = list((names or {}).get(subset, ()))
            candidates = [folder / f"{subset}.txt", *(place / n for n in extra for place in (folder, root))]
            path = next((c for c in candidates if c.is_file()), None)
        out[subset] = path
    return out


def check_subset(name: str, subset: str | None, lists: dict[str, object]) -> str | None:
    """Normalise ``subset`` (None/'all' -> None) and check a list file was given for it; ValueError otherwise."""
    subset = None if subset in (None, "all") else subset
    if subset is not None and subset not in SUBSET_OPTIONS:
        raise ValueError(f"unknown subset {subset!r} for {name}; valid: all, {', '.join(SUBSET_OPTIONS)}")
    if subset is not None and lists.get(subset) is None:
        raise ValueError(f"subset {subset!r} of {name} needs RAN's list file: give the option "
                         f"{SUBSET_OPTIONS[subset]} (data.options.{SUBSET_OPTIONS[subset]})")
    return subset
