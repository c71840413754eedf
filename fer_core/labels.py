"""The project's one canonical class order, named label sets, each data set's own order, and the subset names.

Every label inside FER Lab is an index into :data:`CLASSES` (or into a label set, which is a
prefix of it). Loaders map their data set's own label codes into this order with
:func:`mapping_from`, so a confusion matrix from any data set reads the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

CLASSES: tuple[str, ...] = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
"""Canonical class order. The seven basic expressions come first, so ``basic7`` is a prefix of ``basic8``."""

SUBSETS: tuple[str, ...] = ("clean", "occlusion", "pose30", "pose45", "ambiguous")
"""Names of the challenge-condition subsets an evaluation reports beside ``all``, in display order: SynthFACS defines
every one (docs/SYNTHFACS.md); RAN's list files give ``occlusion``, ``pose30`` and ``pose45`` of real data sets."""

LABEL_SETS: dict[str, tuple[str, ...]] = {
    "basic7": CLASSES[:7],
    "basic8": CLASSES,
}

# Each data set's own label order (index = the code written in the data set's files).
DATASET_ORDERS: dict[str, tuple[str, ...]] = {
    "fer2013": ("anger", "disgust", "fear", "happy", "sad", "surprise", "neutral"),
    "ferplus": ("neutral", "happy", "surprise", "sad", "anger", "disgust", "fear", "contempt"),
    "rafdb": ("surprise", "fear", "disgust", "happy", "sad", "anger", "neutral"),  # codes 1..7 -> index code-1
    "affectnet": ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt"),
    "ckplus": ("neutral", "anger", "contempt", "disgust", "fear", "happy", "sad", "surprise"),
    "mini_xception_fer2013": ("anger", "disgust", "fear", "happy", "sad", "surprise", "neutral"),
}


def label_set(name: str) -> tuple[str, ...]:
    """Return the class names of a named label set, e.g. ``label_set("basic7")``."""
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise ValueError(f"unknown label set {name!r}; valid: {', '.join(LABEL_SETS)}") from None


def mapping_from(order: Sequence[str]) -> list[int]:
    """Map a data set's own label order to canonical indices: ``canonical = mapping[own_code]``."""
    out = []
    for name in order:
        if name not in CLASSES:
            raise ValueError(f"class {name!r} is not a canonical class; valid: {', '.join(CLASSES)}")
        out.append(CLASSES.index(name))
    return out


def num_classes(name: str) -> int:
    """Number of classes in a named label set."""
    return len(label_set(name))
