"""Facial action units, the EMFACS expression prototypes, and soft labels for SynthFACS.

An expression is an AU intensity vector over :data:`AUS`, each in [0, 1]. AU 12 and AU 14 also exist
in a one-sided form (``U12``, ``U14``): contempt is 12 + 14 on one side of the face only, so a unilateral
smile is its own action, distinct from a weak smile.

The prototypes follow EMFACS as commonly tabulated (SYNTHFACS.md). Confusable classes share AUs on purpose:
fear is surprise (1 + 2 + 5 + 26) plus a weaker 4, 7 and 20; disgust lowers the brows (4) and tightens the lids
(7) as anger does, and anger often raises the upper lip (10) as disgust does.
"""

from __future__ import annotations

import functools

import numpy as np

AUS: tuple[str, ...] = (
    "1", "2", "4", "5", "6", "7", "9", "10", "12", "14", "15", "16", "17", "20", "23", "25", "26", "U12", "U14",
)
AU_INDEX = {name: i for i, name in enumerate(AUS)}
AU_DESCRIPTIONS: dict[str, str] = {
    "1": "inner brow raiser", "2": "outer brow raiser", "4": "brow lowerer", "5": "upper lid raiser",
    "6": "cheek raiser", "7": "lid tightener", "9": "nose wrinkler", "10": "upper lip raiser",
    "12": "lip corner puller", "14": "dimpler", "15": "lip corner depressor", "16": "lower lip depressor",
    "17": "chin raiser", "20": "lip stretcher", "23": "lip tightener", "25": "lips part", "26": "jaw drop",
    "U12": "lip corner puller, one side", "U14": "dimpler, one side",
}

# Core prototype of each class at full intensity (AU -> intensity).
PROTOTYPES: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"6": 0.8, "12": 1.0},
    "sad": {"1": 0.9, "4": 0.6, "15": 0.9},
    "surprise": {"1": 1.0, "2": 1.0, "5": 0.9, "26": 0.9},
    "fear": {"1": 1.0, "2": 0.8, "4": 0.5, "5": 1.0, "7": 0.4, "20": 0.6, "26": 0.7},
    "disgust": {"9": 0.9, "15": 0.5, "16": 0.5, "4": 0.6, "7": 0.3},
    "anger": {"4": 1.0, "5": 0.5, "7": 0.8, "23": 0.9},
    "contempt": {"U12": 0.9, "U14": 0.8},
}

# Optional AUs: (AU, probability, intensity) added on top of the prototype, and alternative prototypes.
OPTIONAL_AUS: dict[str, list[tuple[str, float, float]]] = {
    "sad": [("17", 0.5, 0.6)],
    "anger": [("10", 0.5, 0.5), ("17", 0.3, 0.5), ("9", 0.2, 0.4)],
    "fear": [("25", 0.5, 0.6)],
    "surprise": [("25", 0.5, 0.6)],
}
ALTERNATIVES: dict[str, dict[str, float]] = {
    "disgust": {"9": 0.9, "10": 0.8, "4": 0.5},  # the 9 + 10 variant
}

# Classes a face is blended with, or a noisy label flipped to (mode "confusable"): the pairs real FER confuses.
CONFUSABLE: dict[str, tuple[str, ...]] = {
    "neutral": ("sad", "contempt"),
    "happy": ("contempt", "surprise"),
    "sad": ("neutral", "fear", "disgust"),
    "surprise": ("fear",),
    "fear": ("surprise",),
    "disgust": ("anger", "sad"),
    "anger": ("disgust",),
    "contempt": ("happy", "neutral"),
}


def prototype_vector(name: str, alternative: bool = False) -> np.ndarray:
    """The AU vector of a class prototype at full intensity."""
    table = ALTERNATIVES[name] if alternative and name in ALTERNATIVES else PROTOTYPES[name]
    vec = np.zeros(len(AUS), dtype=np.float32)
    for au, value in table.items():
        vec[AU_INDEX[au]] = value
    return vec


def expression_vector(cls: str, intensity: float, rng: np.random.Generator) -> np.ndarray:
    """Sample the AU vector of one expression of class ``cls`` at a given overall intensity.

    Each AU of the prototype gets its own jitter (people do not move every AU equally), and the
    optional AUs of the class are added at random.
    """
    alternative = cls in ALTERNATIVES and rng.random() < 0.4
    vec = prototype_vector(cls, alternative) * intensity
    active = vec > 0
    vec[active] *= rng.uniform(0.75, 1.15, size=int(active.sum()))
    for au, prob, value in OPTIONAL_AUS.get(cls, []):
        if rng.random() < prob:
            vec[AU_INDEX[au]] = max(vec[AU_INDEX[au]], value * intensity)
    if cls == "happy" and intensity > 0.65:  # broad smile parts the lips
        vec[AU_INDEX["25"]] = max(vec[AU_INDEX["25"]], (intensity - 0.5) * 1.6)
    return np.clip(vec, 0.0, 1.0)


def label_distribution(au: np.ndarray, classes: tuple[str, ...], temperature: float = 0.08,
                       min_scale: float = 0.3) -> np.ndarray:
    """Soft label: softmax of minus the squared distance of ``au`` to each class's prototype line.

    The distance to class k is measured to the closest point on the segment ``t * p_k``, t in [0, 1], so an
    expression of any intensity along a prototype is close to it; the neutral prototype is the origin.
    Weak and blended expressions therefore get flat distributions.
    """
    protos, owner = _variant_table(tuple(classes))
    norms = (protos * protos).sum(1)
    t = np.minimum(np.maximum(protos @ au / np.maximum(norms, 1e-8), min_scale), 1.0)
    t[norms == 0] = 0.0
    dv = ((au[None, :] - t[:, None] * protos) ** 2).sum(1)
    d2 = np.full(len(classes), np.inf)
    np.minimum.at(d2, owner, dv)
    logits = -d2 / temperature
    logits -= logits.max()
    p = np.exp(logits)
    return (p / p.sum()).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _variant_table(classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Every prototype variant of the classes as rows, with the index of the class each belongs to."""
    rows, owner = [], []
    for k, cls in enumerate(classes):
        rows.append(prototype_vector(cls))
        owner.append(k)
        if cls in ALTERNATIVES:
            rows.append(prototype_vector(cls, True))
            owner.append(k)
    return np.stack(rows).astype(np.float64), np.array(owner)


__all__ = [
    "AUS", "AU_INDEX", "AU_DESCRIPTIONS", "PROTOTYPES", "CONFUSABLE",
    "prototype_vector", "expression_vector", "label_distribution",
]
