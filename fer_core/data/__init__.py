"""Data sets: a registry of builders, and a way to hold a whole data set in memory.

``build_dataset(name, root=None, split="train", subset=None, **options)`` returns a torch Dataset whose
samples are dicts (see docs/CONTRACTS.md): ``image`` (uint8 C x H x W), ``label``, ``index`` and, where the
data set has them, ``label_dist``, ``clean_label``, ``mask``, ``subject``, ``pose``, ``occluder``.

Where the files are: a data set's folder is ``data.root`` when given, else ``$FER_DATA/<name>`` (``FER_DATA`` names
one folder holding a sub-folder per data set, e.g. ``$FER_DATA/rafdb``, ``$FER_DATA/fer2013``).
:func:`configured_datasets` lists those found there; the app offers only them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .cache import materialize

__all__ = ["register_dataset", "build_dataset", "list_datasets", "dataset_info", "materialize", "data_home",
           "resolve_root", "configured_datasets", "unknown_options"]

DATA_ENV = "FER_DATA"


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    builder: Callable
    description: str
    needs_root: bool
    options: tuple[str, ...] | None = None  # the builder's keyword options; None: the builder checks its own


_REGISTRY: dict[str, DatasetEntry] = {}


def register_dataset(name: str, *, description: str, needs_root: bool, options: tuple[str, ...] | None = None):
    """Decorator registering a data set builder ``builder(root, split, subset, **options)`` under ``name``.

    ``options``: the names of the options the builder takes; :func:`build_dataset` (and the launch check, before a
    run exists) refuse any other, naming the valid ones. None leaves the check to the builder (SynthFACS)."""

    def wrap(builder: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"data set {name!r} is already registered")
        _REGISTRY[name] = DatasetEntry(name, builder, description, needs_root,
                                       None if options is None else tuple(options))
        return builder

    return wrap


def list_datasets() -> list[str]:
    """Names of all registered data sets."""
    return sorted(_REGISTRY)


def dataset_info(name: str) -> dict:
    """Name, description, whether the data set needs files on disk, and its option names (None: not declared)."""
    entry = _entry(name)
    return {"name": entry.name, "description": entry.description, "needs_root": entry.needs_root,
            "options": None if entry.options is None else list(entry.options)}


def unknown_options(name: str, options) -> str | None:
    """The problem with ``options`` for data set ``name`` as a sentence naming the valid ones, or None."""
    valid = _entry(name).options
    unknown = sorted(set(options) - set(valid)) if valid is not None else []
    if not unknown:
        return None
    return f"unknown option(s) {', '.join(unknown)} for {name}; valid: {', '.join(valid) or 'none'}"


def _entry(name: str) -> DatasetEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; valid: {', '.join(list_datasets())}") from None


def data_home() -> Path | None:
    """``$FER_DATA`` (the folder of configured data sets), or None when it is not set."""
    value = os.environ.get(DATA_ENV, "").strip()
    return Path(value).expanduser() if value else None


def resolve_root(name: str, root=None) -> Path | None:
    """The folder a data set is read from: ``root`` when given, else ``$FER_DATA/<name>`` if that folder exists,
    else None (and always None for data sets that need no files)."""
    if root is not None and str(root).strip():
        return Path(root).expanduser()
    home = data_home()
    if not _entry(name).needs_root or home is None or not (home / name).is_dir():
        return None
    return home / name


def configured_datasets() -> dict[str, Path]:
    """``{name: folder}`` of the registered data sets that have a folder under ``$FER_DATA`` (empty when unset)."""
    home = data_home()
    if home is None:
        return {}
    return {n: home / n for n in list_datasets() if _REGISTRY[n].needs_root and (home / n).is_dir()}


def build_dataset(name: str, root=None, split: str = "train", subset: str | None = None, **options):
    """Build a registered data set.

    Args:
        name: a name from :func:`list_datasets`.
        root: folder holding the data set's files; None: ``$FER_DATA/<name>`` for data sets read from disk, nothing
            for those that need no files (``synthfaces``).
        split: ``train``, ``val`` or ``test``.
        subset: None or ``all`` for the whole split, else a challenge-condition subset the data set defines.
        **options: data-set specific options (for SynthFACS, the fields of ``SynthConfig``).
    """
    entry = _entry(name)
    problem = unknown_options(name, options)
    if problem:
        raise ValueError(problem)
    if entry.needs_root:
        root = resolve_root(name, root)
        if root is None:
            home = data_home()
            where = (f"or put it in {home / name} (FER_DATA is {home})" if home is not None else
                     f"or set {DATA_ENV} to a folder holding a {name}/ sub-folder")
            raise ValueError(f"data set {name!r} reads files from disk: give its folder as root (data.root), {where}")
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
from . import affectnet, ckplus, fer2013, ferplus, imagefolder, rafdb  # noqa: E402,F401
