"""Data sets: a registry of loaders (:mod:`fer_core.data.registry`), and a way to hold a whole data set in memory.

``build_dataset(name, root=None, split="train", subset=None, **options)`` returns a torch Dataset whose
samples are dicts (see docs/CONTRACTS.md): ``image`` (uint8 C x H x W), ``label``, ``index`` and, where the
data set has them, ``label_dist``, ``clean_label``, ``mask``, ``subject``, ``pose``, ``occluder``.

Where the files are: a data set's folder is ``data.root`` when given, else ``$FER_DATA/<name>`` (``FER_DATA`` names
one folder holding a sub-folder per data set, e.g. ``$FER_DATA/rafdb``, ``$FER_DATA/fer2013``).
:func:`configured_datasets` lists those found there; the app offers only them.
"""

from __future__ import annotations

# The loaders register themselves on import (each imports fer_core.data.registry).
from fer_core.data import (  # noqa: F401
    affectnet,
    ckplus,
    fer2013,
    ferplus,
    imagefolder,
    rafdb,
    synthfaces,
    synthfaces_pretrain,
)
from fer_core.data.cache import materialize
from fer_core.data.registry import (
    DATA_ENV,
    DatasetInfo,
    build_dataset,
    configured_datasets,
    data_home,
    dataset_classes,
    dataset_info,
    list_datasets,
    register_dataset,
    resolve_root,
    unknown_options,
)

__all__ = ["DATA_ENV", "DatasetInfo", "build_dataset", "configured_datasets", "data_home", "dataset_classes",
           "dataset_info", "list_datasets", "materialize", "register_dataset", "resolve_root", "unknown_options"]
