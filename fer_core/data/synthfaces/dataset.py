"""SynthFACS: the built-in, procedural face-expression data set (see docs/SYNTHFACS.md).

Sample ``i`` of a split is a pure function of (version, seed, split, i) and the options that change labels;
nothing is read from disk. Splits are subject-disjoint; the test-condition subsets are selected by rule
from the sampled parameters, without rendering.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch.utils.data import Dataset

from fer_core.data.registry import register_dataset
from fer_core.labels import SUBSETS as LABEL_SUBSETS
from fer_core.labels import label_set

from .aus import AU_INDEX, AUS, CONFUSABLE, expression_vector, label_distribution
from .render import OCCLUDERS, FaceSpec, Identity, Nuisance, render

VERSION = "1.0"
"""Data set version: bumped whenever any pixel or label of any sample changes."""
_VERSION_KEY = 10  # integer form of VERSION's major part, mixed into every seed

SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
SUBSETS: tuple[str, ...] = LABEL_SUBSETS  # every challenge subset the project names
DEFAULT_SIZES = {"train": 12271, "val": 1534, "test": 3068}  # RAF-DB basic's train/test sizes
SUBJECT_RANGES = {"train": (0, 600), "val": (600, 680), "test": (680, 830)}
CLASS_PRIOR = {  # imbalanced like real FER data (few fear, disgust, contempt; many happy, neutral)
    "neutral": 0.20, "happy": 0.30, "sad": 0.13, "surprise": 0.11, "fear": 0.06, "disgust": 0.07, "anger": 0.08,
    "contempt": 0.05,
}
AMBIGUOUS_MAX_PROB = 0.6

SKIN_TONES = np.array([(255, 224, 196), (241, 194, 160), (230, 180, 140), (224, 172, 135), (198, 134, 96),
                       (176, 118, 84), (141, 92, 62), (110, 72, 50), (236, 196, 168)], np.float64)
HAIR_COLOURS = np.array([(28, 24, 22), (55, 38, 28), (95, 62, 38), (140, 100, 60), (200, 168, 110),
                         (150, 68, 35), (165, 165, 165), (45, 35, 30)], np.float64)
IRIS_COLOURS = np.array([(70, 45, 30), (40, 28, 22), (80, 110, 150), (85, 110, 70), (110, 80, 50)], np.float64)


@dataclass(frozen=True)
class SynthConfig:
    """Options of SynthFACS. Every field is a keyword of ``build_dataset("synthfaces", ...)``.

    Attributes:
        image_size: side of the square RGB image in pixels.
        label_set: ``basic7`` (RAF-DB's seven) or ``basic8`` (with contempt, as FERPlus/AffectNet-8).
        seed: the data set's seed; sample i of a split is fixed by (version, seed, split, i).
        train_size, val_size, test_size: samples per split (defaults mirror RAF-DB: 12,271 / 1,534 / 3,068).
        noise_rate: probability of flipping a training label (``clean_label`` keeps the truth).
        noise_mode: ``uniform`` (to any other class, the SCN protocol) or ``confusable``.
        noise_splits: splits whose labels get noise (by default only ``train``).
        balance: ``imbalanced`` (real-world class frequencies) or ``balanced``.
        occlusion_rate: fraction of faces with an occluder.
        profile_rate: fraction of faces whose yaw is drawn uniformly from +-60 degrees (else near frontal).
        blend_rate: fraction of faces that blend in a second, confusable expression.
        min_intensity: lowest overall expression intensity (lower = harder).
    """

    image_size: int = 112
    label_set: str = "basic7"
    seed: int = 0
    train_size: int = DEFAULT_SIZES["train"]
    val_size: int = DEFAULT_SIZES["val"]
    test_size: int = DEFAULT_SIZES["test"]
    noise_rate: float = 0.0
    noise_mode: str = "uniform"
    noise_splits: tuple[str, ...] = ("train",)
    balance: str = "imbalanced"
    occlusion_rate: float = 0.22
    profile_rate: float = 0.4
    blend_rate: float = 0.25
    min_intensity: float = 0.3

    def __post_init__(self):
        checks = [
            (16 <= self.image_size <= 512, "image_size", "an integer from 16 to 512"),
            (self.label_set in ("basic7", "basic8"), "label_set", "'basic7' or 'basic8'"),
            (0.0 <= self.noise_rate < 1.0, "noise_rate", "a number in [0, 1)"),
            (self.noise_mode in ("uniform", "confusable"), "noise_mode", "'uniform' or 'confusable'"),
            (all(s in SPLITS for s in self.noise_splits), "noise_splits", f"a list of {list(SPLITS)}"),
            (self.balance in ("imbalanced", "balanced"), "balance", "'imbalanced' or 'balanced'"),
            (0.0 <= self.occlusion_rate <= 1.0, "occlusion_rate", "a number in [0, 1]"),
            (0.0 <= self.profile_rate <= 1.0, "profile_rate", "a number in [0, 1]"),
            (0.0 <= self.blend_rate <= 1.0, "blend_rate", "a number in [0, 1]"),
            (0.0 <= self.min_intensity <= 1.0, "min_intensity", "a number in [0, 1]"),
        ]
        for split in SPLITS:
            checks.append((getattr(self, f"{split}_size") >= 1, f"{split}_size", "a positive integer"))
        for ok, key, valid in checks:
            if not ok:
                raise ValueError(f"synthfaces option {key}={getattr(self, key)!r} is invalid: must be {valid}")

    @classmethod
    def from_options(cls, **options) -> SynthConfig:
        """Build from keyword options, naming any unknown option and listing the valid ones."""
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise ValueError(f"unknown synthfaces option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
        if "noise_splits" in options:
            options["noise_splits"] = tuple(options["noise_splits"])
        return cls(**options)

    @property
    def classes(self) -> tuple[str, ...]:
        return label_set(self.label_set)

    def size(self, split: str) -> int:
        return int(getattr(self, f"{split}_size"))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["noise_splits"] = list(self.noise_splits)
        return d


def make_identity(seed: int, subject: int) -> Identity:
    """The subject's face: a pure function of (data set seed, subject id)."""
    rng = np.random.default_rng([_VERSION_KEY, seed, 1_000_003, subject])
    bias = np.zeros(len(AUS), np.float32)
    for au in ("4", "12", "15", "1", "7", "23", "10"):  # resting-face idiosyncrasies
        if rng.random() < 0.15:
            bias[AU_INDEX[au]] = rng.uniform(0.05, 0.25)
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.93, 1.05, 3)
    hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.85, 1.15)
    lip = skin * np.array([0.82, 0.55, 0.55]) + np.array([25, 5, 5]) * rng.uniform(0.5, 1.5)
    return Identity(
        half_width=rng.uniform(0.70, 0.82), jaw=rng.uniform(0.12, 0.34),
        eye_x=rng.uniform(0.29, 0.35), eye_y=rng.uniform(-0.09, -0.01), eye_w=rng.uniform(0.21, 0.26),
        eye_h=rng.uniform(0.075, 0.095), brow_gap=rng.uniform(0.07, 0.11), brow_thick=rng.uniform(0.03, 0.06),
        brow_arch=rng.uniform(0.01, 0.045), nose_len=rng.uniform(0.26, 0.34), nose_w=rng.uniform(0.075, 0.11),
        mouth_y=rng.uniform(0.48, 0.56), mouth_w=rng.uniform(0.16, 0.22), lip_thick=rng.uniform(0.035, 0.06),
        hairline=rng.uniform(-0.62, -0.48), hair_style=int(rng.choice(4, p=[0.4, 0.3, 0.1, 0.2])),
        skin=tuple(np.clip(skin, 0, 255)), hair=tuple(np.clip(hair, 0, 255)),
        iris=tuple(IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))]), lip=tuple(np.clip(lip, 0, 255)),
        cloth=tuple(rng.uniform(20, 220, 3)), glasses=bool(rng.random() < 0.12), folds=rng.uniform(0.05, 0.3),
        bias=bias,
    )


@dataclass
class SampleMeta:
    """Everything about a sample except its pixels (cheap to compute)."""

    spec: FaceSpec
    subject: int
    label: int
    clean_label: int
    label_dist: np.ndarray
    intensity: float
    blend: str | None


def sample_meta(cfg: SynthConfig, split: str, index: int, *, intensity: float | None = None) -> SampleMeta:
    """Draw the parameters of sample ``index`` of ``split`` (no rendering).

    ``intensity`` (in (0, 1]) replaces the overall expression intensity the sample draws, and nothing else: every
    random draw is still made, in the same order and number, so the result is the same face as the data set's
    (subject, pose, occluder, light, camera, expression prototype, jitter and blend) at another intensity, a
    counterfactual (``fer_core.probe``). None (the default) is the data set's own sample.
    """
    if intensity is not None and not 0.0 < intensity <= 1.0:
        raise ValueError(f"intensity must be in (0, 1] (at 0 the expression's random draws change), got {intensity}")
    classes = cfg.classes
    rng = np.random.default_rng([_VERSION_KEY, cfg.seed, SPLITS[split], index])
    lo, hi = SUBJECT_RANGES[split]
    subject = int(rng.integers(lo, hi))
    prior = np.array([CLASS_PRIOR[c] for c in classes]) if cfg.balance == "imbalanced" else np.ones(len(classes))
    cls = classes[min(len(classes) - 1, int(np.searchsorted(np.cumsum(prior) / prior.sum(), rng.random())))]
    drawn = float(cfg.min_intensity + (1 - cfg.min_intensity) * rng.beta(1.6, 1.2))
    intensity = drawn if intensity is None else float(intensity)
    au = expression_vector(cls, intensity, rng) if cls != "neutral" else np.zeros(len(AUS), np.float32)
    blend = None
    if rng.random() < cfg.blend_rate:
        partners = [c for c in CONFUSABLE[cls] if c in classes]
        if partners:
            blend = partners[int(rng.integers(len(partners)))]
            weight = rng.uniform(0.25, 0.5)
            other = expression_vector(blend, intensity, rng) if blend != "neutral" else np.zeros_like(au)
            au = (1 - weight) * au + weight * other
    au = np.clip(au + rng.normal(0, 0.03, au.shape) * (au > 0), 0, 1).astype(np.float32)
    if rng.random() < cfg.profile_rate:
        yaw = rng.uniform(-60, 60)
    else:
        yaw = min(30.0, max(-30.0, rng.normal(0, 10)))
    pitch, roll = min(20.0, max(-20.0, rng.normal(0, 7))), min(15.0, max(-15.0, rng.normal(0, 6)))
    occluder = OCCLUDERS[1 + int(rng.integers(len(OCCLUDERS) - 1))] if rng.random() < cfg.occlusion_rate else "none"
    light = (rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.3), 1.0)
    nuisance = Nuisance(
        light=light, ambient=rng.uniform(0.45, 0.7), gradient=(rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.25)),
        background=tuple(rng.uniform(40, 220, 3)), clutter=int(rng.integers(0, 6)), noise=rng.uniform(0, 6),
        blur=rng.uniform(0.2, 1.0) if rng.random() < 0.5 else 0.0,
        jpeg=int(rng.integers(35, 96)) if rng.random() < 0.6 else 0,
        dx=rng.uniform(-0.04, 0.04), dy=rng.uniform(-0.04, 0.04), zoom=rng.uniform(0.92, 1.08),
        seed=int(rng.integers(2**31)),
    )
    spec = FaceSpec(identity=_identity(cfg.seed, subject), au=au, yaw=float(yaw), pitch=pitch, roll=roll,
                    occluder=occluder, occluder_seed=int(rng.integers(2**31)),
                    unilateral_side=1 if rng.random() < 0.5 else -1, nuisance=nuisance)
    visible = np.clip(au + spec.identity.bias, 0, 1)
    dist = label_distribution(visible, classes)
    label = clean = classes.index(cls)
    if split in cfg.noise_splits and cfg.noise_rate > 0:
        nrng = np.random.default_rng([_VERSION_KEY, cfg.seed, SPLITS[split], index, 7])
        if nrng.random() < cfg.noise_rate:
            if cfg.noise_mode == "confusable":
                options = [classes.index(c) for c in CONFUSABLE[cls] if c in classes] or None
            else:
                options = None
            if not options:
                options = [k for k in range(len(classes)) if k != clean]
            label = int(options[int(nrng.integers(len(options)))])
    return SampleMeta(spec=spec, subject=subject, label=label, clean_label=clean, label_dist=dist,
                      intensity=intensity, blend=blend)


@functools.lru_cache(maxsize=4096)
def _identity(seed: int, subject: int) -> Identity:
    return make_identity(seed, subject)


def subset_rule(name: str, meta: SampleMeta) -> bool:
    """Whether a sample belongs to a test-condition subset."""
    if name == "clean":  # unoccluded and near frontal: the easy, controlled condition
        return meta.spec.occluder == "none" and abs(meta.spec.yaw) <= 30
    if name == "occlusion":
        return meta.spec.occluder != "none"
    if name == "pose30":
        return abs(meta.spec.yaw) > 30
    if name == "pose45":
        return abs(meta.spec.yaw) > 45
    if name == "ambiguous":
        return float(meta.label_dist.max()) < AMBIGUOUS_MAX_PROB
    raise ValueError(f"unknown SynthFACS subset {name!r}; valid: all, {', '.join(SUBSETS)}")


class SynthFaces(Dataset):
    """SynthFACS as a torch Dataset (see the module docstring and docs/SYNTHFACS.md).

    Args:
        split: ``train``, ``val`` or ``test`` (subject-disjoint).
        subset: None / ``all``, or ``clean`` (unoccluded, |yaw| <= 30), ``occlusion``, ``pose30`` (|yaw| > 30),
            ``pose45`` (|yaw| > 45), ``ambiguous`` (top soft-label probability below 0.6).
        **options: fields of :class:`SynthConfig`.
    """

    name = "synthfaces"
    splits = tuple(SPLITS)
    subsets = SUBSETS
    version = VERSION
    soft_labels = True
    """Whether items carry ``label_dist`` (and :attr:`label_dists` is an array)."""

    def __init__(self, split: str = "train", subset: str | None = None, **options):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} for synthfaces; valid: {', '.join(SPLITS)}")
        self.cfg = SynthConfig.from_options(**options)
        self.split = split
        self.subset = None if subset in (None, "all") else subset
        self.classes = self.cfg.classes
        self.num_classes = len(self.classes)
        self.channels = 3
        self.image_size = self.cfg.image_size
        self._metas = _split_metas(self.cfg, split)
        if self.subset is None:
            self.split_indices = np.arange(len(self._metas))
        else:
            self.split_indices = np.array([i for i, m in enumerate(self._metas) if subset_rule(self.subset, m)],
                                          dtype=np.int64)
            self.split_positions = self.split_indices  # the whole split is samples 0..n-1 in order
        self.labels = np.array([self._metas[i].label for i in self.split_indices], dtype=np.int64)
        self.clean_labels = np.array([self._metas[i].clean_label for i in self.split_indices], dtype=np.int64)
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def config(self) -> dict:
        return {"name": self.name, "version": VERSION, "split": self.split, "subset": self.subset or "all",
                **self.cfg.to_dict()}

    def __len__(self) -> int:
        return len(self.split_indices)

    @property
    def label_dists(self) -> np.ndarray:
        """Soft label distribution of every sample (N x C float32): the ``label_dist`` of each item, for label
        distribution learning. Data sets with soft labels (FERPlus votes too) offer this attribute."""
        return np.stack([self._metas[i].label_dist for i in self.split_indices]).astype(np.float32)

    def meta(self, i: int) -> SampleMeta:
        """Parameters of sample i of this data set (no rendering)."""
        return self._metas[int(self.split_indices[i])]

    def meta_at_intensity(self, i: int, intensity: float) -> SampleMeta:
        """Sample i's parameters with another overall expression intensity and every other draw the same
        (:func:`sample_meta`'s ``intensity``): the counterfactual face of ``fer_core.probe``."""
        return sample_meta(self.cfg, self.split, int(self.split_indices[i]), intensity=intensity)

    def render(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image (H, W, 3) uint8, relevance mask and occluder mask of sample i, rendered now."""
        return render(self.meta(i).spec, self.image_size)

    def attach_cache(self, images: np.ndarray, masks: np.ndarray, occluders: np.ndarray) -> None:
        """Serve pixels from arrays rendered earlier for the whole split (see ``fer_core.data.materialize``)."""
        self._cache = (images, masks, occluders)

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {self.name} {self.split} of size {len(self)}")
        meta = self.meta(i)
        if self._cache is not None:
            j = int(self.split_indices[i])
            image, mask = self._cache[0][j], self._cache[1][j]
        else:
            image, mask, _ = self.render(i)
        spec = meta.spec
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "label": meta.label,
            "index": int(i),
            "clean_label": meta.clean_label,
            "label_dist": torch.from_numpy(meta.label_dist),
            "mask": torch.from_numpy(np.array(mask)),  # a copy: the cache is a read-only memory map
            "subject": meta.subject,
            "pose": torch.tensor([spec.yaw, spec.pitch, spec.roll], dtype=torch.float32),
            "occluder": spec.occluder,
        }
        if not self.soft_labels:  # (synthfaces_pretrain's identity task: a subject has no label distribution)
            del item["label_dist"]
        return item


@functools.lru_cache(maxsize=16)
def _split_metas(cfg: SynthConfig, split: str) -> tuple[SampleMeta, ...]:
    """Parameters of every sample of a split, computed once per (options, split) in a process."""
    return tuple(sample_meta(cfg, split, i) for i in range(cfg.size(split)))


@dataclass(frozen=True, eq=False)
class ComposedFace:
    """A SynthFACS face drawn from hand-picked parameters (:func:`compose_face`).

    Attributes:
        image: RGB uint8 ``(size, size, 3)``.
        mask: the ground-truth relevance mask, uint8 ``(size, size)`` in {0, 1}.
        occluder_mask: pixels covered by the occluder, uint8 ``(size, size)`` in {0, 1}.
        label_dist: the generator's soft label of the visible expression (``classes`` order, float32).
        classes: the class names of ``label_dist``.
        spec: everything that defines the image (render it again with :func:`render`).
    """

    image: np.ndarray
    mask: np.ndarray
    occluder_mask: np.ndarray
    label_dist: np.ndarray
    classes: tuple[str, ...]
    spec: FaceSpec


def compose_face(aus: dict[str, float] | None = None, *, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0,
                 occluder: str = "none", subject: int = 0, seed: int = 0, image_size: int = 112,
                 label_set: str = "basic7", occluder_seed: int = 0, unilateral_side: int = 1,
                 nuisance: Nuisance | None = None) -> ComposedFace:
    """Render one SynthFACS face from chosen action units, head pose and occluder (the app's playground).

    The subject is a data set subject (its face, hair, colours and resting face, :func:`make_identity` of
    ``(seed, subject)``); light and background are plain (``Nuisance()``) unless ``nuisance`` is given, so only
    what was chosen changes the picture. The soft label is computed from the visible AUs (expression plus the
    subject's resting face) exactly as for the data set's samples.

    Args:
        aus: AU name (as in ``aus.AUS``: ``"1"``, ``"12"``, ``"U14"``...) to intensity in [0, 1]; others are 0.
        yaw, pitch, roll: head pose in degrees (the data set draws yaw in +-60, pitch +-20, roll +-15).
        occluder: one of ``OCCLUDERS``.
        subject: subject id (train 0-599, val 600-679, test 680-829; any non-negative id works).
        seed: the data set seed the subject's identity comes from.
        image_size: side of the square image, 16 to 512.
        label_set: ``basic7`` or ``basic8``: the classes of the soft label.
        occluder_seed: where a random occluder (hand, block) lands.
        unilateral_side: side of the one-sided AUs (U12, U14): +1 the viewer's right, -1 the left.
        nuisance: light, background and camera (default: neutral).

    Raises:
        ValueError: an unknown AU or occluder, an intensity outside [0, 1], or a bad size, label set or subject.
    """
    aus = dict(aus or {})
    unknown = sorted(set(aus) - set(AU_INDEX))
    if unknown:
        raise ValueError(f"unknown action unit(s) {', '.join(unknown)}; valid: {', '.join(AUS)}")
    bad = {k: v for k, v in aus.items() if not 0.0 <= float(v) <= 1.0}
    if bad:
        raise ValueError(f"action unit intensities must be in [0, 1]; got {bad}")
    if occluder not in OCCLUDERS:
        raise ValueError(f"unknown occluder {occluder!r}; valid: {', '.join(OCCLUDERS)}")
    if subject < 0:
        raise ValueError(f"subject must be a non-negative id, got {subject}")
    classes = SynthConfig(image_size=image_size, label_set=label_set).classes  # validates size and label set
    au = np.zeros(len(AUS), np.float32)
    for name, value in aus.items():
        au[AU_INDEX[name]] = float(value)
    spec = FaceSpec(identity=_identity(int(seed), int(subject)), au=au, yaw=float(yaw), pitch=float(pitch),
                    roll=float(roll), occluder=occluder, occluder_seed=int(occluder_seed),
                    unilateral_side=1 if unilateral_side >= 0 else -1, nuisance=nuisance or Nuisance())
    image, mask, occ = render(spec, int(image_size))
    dist = label_distribution(np.clip(au + spec.identity.bias, 0, 1), classes)
    return ComposedFace(image=image, mask=mask, occluder_mask=occ, label_dist=dist, classes=classes, spec=spec)


def _classes(**options) -> tuple[str, ...]:
    """The classes of SynthFACS with these options (validating every option)."""
    return SynthConfig.from_options(**options).classes


@register_dataset("synthfaces", description="SynthFACS: procedural faces rendered from FACS action units, with "
                  "pose, occluders, soft labels and ground-truth relevance masks (built in, no files)",
                  needs_root=False, classes=_classes)
def build_synthfaces(root=None, split: str = "train", subset: str | None = None, **options) -> SynthFaces:
    """The registry's builder: SynthFACS needs no files, so a root is an error."""
    if root is not None:
        raise ValueError("synthfaces needs no root (it is generated); remove data.root")
    return SynthFaces(split=split, subset=subset, **options)
