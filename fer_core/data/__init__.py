"""Data sets: a registry of builders, and a way to hold a whole data set in memory.

``build_dataset(name, root=None, split="train", subset=None, **options)`` returns a torch Dataset whose
samples are dicts (see docs/CONTRACTS.md): ``image`` (uint8 C x H x W), ``label``, ``index`` and, where the
data set has them, ``label_dist``, ``clean_label``, ``mask``, ``subject``, ``pose``, ``occluder``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .cache import materialize

__all__ = ["register_dataset", "build_dataset", "list_datasets", "dataset_info", "materialize"]


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    builder: Callable
    description: str
    needs_root: bool


_REGISTRY: dict[str, DatasetEntry] = {}


def register_dataset(name: str, *, description: str, needs_root: bool):
    """Decorator registering a data set builder ``builder(root, split, subset, **options)`` under ``name``."""

    def wrap(builder: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"data set {name!r} is already registered")
        _REGISTRY[name] = DatasetEntry(name, builder, description, needs_root)
        return builder

    return wrap


def list_datasets() -> list[str]:
    """Names of all registered data sets."""
    return sorted(_REGISTRY)


def dataset_info(name: str) -> dict:
    """Name, description and whether the data set needs files on disk."""
    entry = _entry(name)
    return {"name": entry.name, "description": entry.description, "needs_root": entry.needs_root}


def _entry(name: str) -> DatasetEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; valid: {', '.join(list_datasets())}") from None


def build_dataset(name: str, root=None, split: str = "train", subset: str | None = None, **options):
    """Build a registered data set.

    Args:
        name: a name from :func:`list_datasets`.
        root: folder holding the data set's files (None for data sets that need none, like ``synthfaces``).
        split: ``train``, ``val`` or ``test``.
        subset: None or ``all`` for the whole split, else a challenge-condition subset the data set defines.
        **options: data-set specific options (for SynthFACS, the fields of ``SynthConfig``).
    """
    entry = _entry(name)
    if entry.needs_root and root is None:
        raise ValueError(f"data set {name!r} reads files from disk: give its folder as root (data.root)")
    return entry.builder(root=root, split=split, subset=subset, **options)


@register_dataset("synthfaces", description="SynthFACS: procedural faces rendered from FACS action units, with "
                  "pose, occluders, soft labels and ground-truth relevance masks (built in, no files)",
                  needs_root=False)
def _synthfaces(root=None, split="train", subset=None, **options):
    from .synthfaces import SynthFaces

    if root is not None:
        raise ValueError("synthfaces needs no root (it is generated); remove data.root")
    return SynthFaces(split=split, subset=subset, **options)


# The real data sets' loaders register themselves on import (they import register_dataset from this package).
from . import fer2013, ferplus, imagefolder, rafdb  # noqa: E402,F401
