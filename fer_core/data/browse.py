"""Looking at a data set: class counts, a few faces per class, one face with what the data set knows about it, and
a summary of every split and challenge subset (``python -m fer_core data info``, the app's Data sets page).

Works on any registered data set (see docs/CONTRACTS.md): counts come from ``ds.labels`` without reading a single
image; faces are read (or, for SynthFACS, rendered) one by one, so showing a sample of a large data set is cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def class_counts(ds: Any) -> np.ndarray:
    """Faces per class (int64, one entry per ``ds.classes``, zeros included) from ``ds.labels``."""
    labels = np.asarray(ds.labels, dtype=np.int64)
    n = len(ds.classes)
    if labels.size and (labels.min() < 0 or labels.max() >= n):
        raise ValueError(f"{getattr(ds, 'name', 'data set')} has labels outside 0..{n - 1} "
                         f"({', '.join(ds.classes)}): {sorted(set(labels.tolist()) - set(range(n)))[:5]}")
    return np.bincount(labels, minlength=n).astype(np.int64)


def per_class_indices(ds: Any, per_class: int, seed: int = 0) -> dict[int, list[int]]:
    """Up to ``per_class`` sample positions of each class, drawn at random (fixed by ``seed``), in ascending order.

    Returns:
        ``{class index: [position in ds, ...]}`` for every class of ``ds.classes`` (an empty list for a class
        without faces).
    """
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    labels = np.asarray(ds.labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    out = {}
    for k in range(len(ds.classes)):
        where = np.flatnonzero(labels == k)
        if len(where) > per_class:
            where = np.sort(rng.choice(where, size=per_class, replace=False))
        out[k] = [int(i) for i in where]
    return out


def face(ds: Any, i: int) -> dict[str, Any]:
    """Sample ``i`` of ``ds`` as plain data for display.

    Returns:
        ``image`` (RGB uint8 ``H x W x 3``), ``label`` and ``class_name``, and where the data set has them:
        ``clean_label``, ``mask`` (uint8 ``H x W`` 0/1), ``pose`` (``(yaw, pitch, roll)`` degrees), ``occluder``,
        ``subject``, ``label_dist`` (float list).
    """
    item = ds[int(i)]
    image = np.asarray(item["image"]).transpose(1, 2, 0)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    out: dict[str, Any] = {"image": np.ascontiguousarray(image, dtype=np.uint8), "label": int(item["label"]),
                           "class_name": ds.classes[int(item["label"])], "index": int(item.get("index", i))}
    if "clean_label" in item:
        out["clean_label"] = int(item["clean_label"])
    if "mask" in item:
        out["mask"] = np.asarray(item["mask"], dtype=np.uint8)
    if "pose" in item:
        out["pose"] = tuple(float(v) for v in np.asarray(item["pose"]).tolist())
    for key in ("occluder", "subject"):
        if key in item:
            out[key] = item[key]
    if "label_dist" in item:
        out["label_dist"] = [float(v) for v in np.asarray(item["label_dist"]).tolist()]
    return out


def faces(ds: Any, indices: Sequence[int]) -> list[dict[str, Any]]:
    """:func:`face` for each position in ``indices``."""
    return [face(ds, i) for i in indices]


def split_report(ds: Any) -> dict[str, Any]:
    """Size, faces per class and what the loader skipped or could not match, for one built split or subset.

    Returns:
        ``n``, ``counts`` (``{class: faces}``), and where the loader reports them: ``dropped`` (``{reason: rows}``,
        rows left out by a published rule), ``unmatched`` (subset-list entries matching no image, up to 20 shown,
        ``unmatched_total`` all of them), ``duplicates`` (repeated list entries).
    """
    counts = class_counts(ds)
    out: dict[str, Any] = {"n": int(len(ds)), "counts": {c: int(v) for c, v in zip(ds.classes, counts, strict=True)}}
    dropped = getattr(ds, "dropped", None)
    if dropped:
        out["dropped"] = {str(k): int(v) for k, v in dropped.items()}
    unmatched = getattr(ds, "unmatched", None)
    if unmatched:
        out["unmatched_total"] = len(unmatched)
        out["unmatched"] = [str(u) for u in list(unmatched)[:20]]
    if getattr(ds, "duplicates", 0):
        out["duplicates"] = int(ds.duplicates)
    return out


def summary(name: str, root=None, subset_split: str = "test", **options: Any) -> dict[str, Any]:
    """Every split of a data set and every challenge subset of ``subset_split`` (RAN's lists are of test images).

    Returns:
        ``name``, ``root`` (the folder read, or None), ``classes``, ``splits`` (``{split: split_report}``) and
        ``subsets`` (``{subset: split_report}``, empty when the data set defines none).

    Raises:
        whatever the loader raises for a missing or malformed data set (its message names the file).
    """
    from fer_core.data.registry import build_dataset, resolve_root

    first = build_dataset(name, root=root, split="train", **options)
    built = {"train": first}
    for split in getattr(first, "splits", ("train", "val", "test")):
        built.setdefault(split, build_dataset(name, root=root, split=split, **options))
    subsets = {}
    if subset_split in built:
        for subset in getattr(built[subset_split], "subsets", ()):
            sub = build_dataset(name, root=root, split=subset_split, subset=subset, **options)
            subsets[subset] = split_report(sub)
    folder = resolve_root(name, root)
    return {"name": name, "root": None if folder is None else str(folder), "classes": list(first.classes),
            "splits": {s: split_report(ds) for s, ds in built.items()}, "subset_split": subset_split,
            "subsets": subsets}
