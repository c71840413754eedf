"""The data set registry: :func:`register_dataset`, :func:`build_dataset` and where a data set's files are.

``build_dataset(name, root=None, split="train", subset=None, **options)`` returns a torch Dataset whose samples are
dicts (see docs/CONTRACTS.md). Loaders register themselves from their own modules; :mod:`fer_core.data` imports
them all and re-exports this module's names.

Where the files are: a data set's folder is ``data.root`` when given, else ``$FER_DATA/<name>`` (``FER_DATA`` names
one folder holding a sub-folder per data set, e.g. ``$FER_DATA/rafdb``, ``$FER_DATA/fer2013``).
:func:`configured_datasets` lists those found there; the app offers only them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA_ENV = "FER_DATA"

ClassesFn = Callable[..., Sequence[str]]
"""``classes(**options) -> class names``: the classes a data set has with those options, known without its files."""


@dataclass(frozen=True)
class DatasetInfo:
    """What the registry knows about a data set without building it.

    Attributes:
        name: registry name.
        description: one paragraph: what it is, its splits and where it is obtained.
        needs_root: whether it reads files the user supplies (every real data set) or needs none (SynthFACS).
        options: the builder's keyword options; None when the builder checks its own (SynthFACS).
    """

    name: str
    description: str
    needs_root: bool
    options: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able view (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class _Entry:
    info: DatasetInfo
    builder: Callable
    classes: Sequence[str] | ClassesFn | None


_REGISTRY: dict[str, _Entry] = {}


def register_dataset(name: str, *, description: str, needs_root: bool, options: Sequence[str] | None = None,
                     classes: Sequence[str] | ClassesFn | None = None) -> Callable[[Callable], Callable]:
    """Decorator registering a data set builder ``builder(root, split, subset, **options)`` under ``name``.

    Args:
        name: registry name (a duplicate raises ValueError).
        description: see :class:`DatasetInfo`.
        needs_root: see :class:`DatasetInfo`.
        options: the names of the options the builder takes; :func:`build_dataset` (and the launch check, before a
            run exists) refuse any other, naming the valid ones. None leaves the check to the builder.
        classes: its class names, or a function of its options giving them (e.g. AffectNet's 7 or 8), so a run's
            model can be checked before the data is read; None when only the files tell (image folders).
    """

    def wrap(builder: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"data set {name!r} is already registered")
        info = DatasetInfo(name, description, needs_root, None if options is None else tuple(options))
        _REGISTRY[name] = _Entry(info, builder, classes)
        return builder

    return wrap


def list_datasets() -> list[str]:
    """Names of all registered data sets, sorted."""
    return sorted(_REGISTRY)


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; valid: {', '.join(list_datasets())}") from None


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a registered data set, without building it."""
    return _entry(name).info


def dataset_classes(name: str, options: Mapping[str, Any] | None = None) -> tuple[str, ...] | None:
    """The class names data set ``name`` has with ``options``, known without reading its files; None when only its
    files tell (an image-folder tree). Raises ValueError for options that choose no valid label set."""
    classes = _entry(name).classes
    if callable(classes):
        classes = classes(**dict(options or {}))
    return None if classes is None else tuple(classes)


def unknown_options(name: str, options: Mapping[str, Any]) -> str | None:
    """The problem with ``options`` for data set ``name`` as a sentence naming the valid ones, or None."""
    valid = _entry(name).info.options
    unknown = sorted(set(options) - set(valid)) if valid is not None else []
    if not unknown:
        return None
    return f"unknown option(s) {', '.join(unknown)} for {name}; valid: {', '.join(valid) or 'none'}"


def data_home() -> Path | None:
    """``$FER_DATA`` (the folder of configured data sets), or None when it is not set."""
    value = os.environ.get(DATA_ENV, "").strip()
    return Path(value).expanduser() if value else None


def resolve_root(name: str, root: str | os.PathLike | None = None) -> Path | None:
    """The folder a data set is read from: ``root`` when given, else ``$FER_DATA/<name>`` if that folder exists,
    else None (and always None for data sets that need no files)."""
    if root is not None and str(root).strip():
        return Path(root).expanduser()
    home = data_home()
    if not _entry(name).info.needs_root or home is None or not (home / name).is_dir():
        return None
    return home / name


def configured_datasets() -> dict[str, Path]:
    """``{name: folder}`` of the registered data sets that have a folder under ``$FER_DATA`` (empty when unset)."""
    home = data_home()
    if home is None:
        return {}
    return {n: home / n for n in list_datasets() if _REGISTRY[n].info.needs_root and (home / n).is_dir()}


def build_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train", subset: str | None = None,
                  **options: Any):
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
    if entry.info.needs_root:
        root = resolve_root(name, root)
        if root is None:
            home = data_home()
            where = (f"or put it in {home / name} (FER_DATA is {home})" if home is not None else
                     f"or set {DATA_ENV} to a folder holding a {name}/ sub-folder")
            raise ValueError(f"data set {name!r} reads files from disk: give its folder as root (data.root), {where}")
    return entry.builder(root=root, split=split, subset=subset, **options)
