"""SynthFACS pretraining faces: subjects the FER splits never use, for identity or clean-expression pretraining.

The offline analogue of the face-identity pretraining SCN and RAN start from (MS-Celeb-1M): a separate data set,
``synthfaces_pretrain``, whose faces belong to SynthFACS subjects **830 and up**. SynthFACS's FER splits draw their
subjects from 0-829 (``SUBJECT_RANGES``: train 0-599, val 600-679, test 680-829), so no face of a pretraining
subject can appear in a FER evaluation. Two tasks (option ``task``):

* ``identity`` (default): the label is the subject (classes ``s0830``, ``s0831``, ...); train, val and test are
  different images of the *same* subjects, with SynthFACS's expressions, poses, occluders and scenes, so the net
  must learn who it is whatever the expression.
* ``expression``: SynthFACS's 7 (or 8) expression classes on *clean* faces of those subjects (no occluder, near
  frontal, as SynthFACS's ``clean`` subset): clean-expression pretraining.

How a face is made (nothing new is drawn by hand): sample ``i`` of a split takes its expression, pose, occluder,
light and background from SynthFACS's own sampler (:func:`~fer_core.data.synthfaces.dataset.sample_meta`) under the
seed ``seed + 2**40`` (an independent stream: FER configurations use small seeds), and its face from pretraining
subject ``830 + i % subjects`` (:func:`~fer_core.data.synthfaces.dataset.make_identity` of ``(seed, subject)``), then
SynthFACS's renderer draws it. Sample ``i`` is therefore a pure function of (SynthFACS version, seed, task options,
split, i), independent of the split sizes, and every subject has the same number of faces (give or take one) in
each split. Rendered splits are cached by :func:`fer_core.data.materialize` like SynthFACS's, in
``$FER_CACHE_DIR/synthfaces_pretrain/``, keyed by these options and the source of this module and of the renderer.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import asdict, dataclass, fields

import numpy as np

from fer_core.data.registry import register_dataset
from fer_core.data.synthfaces.aus import label_distribution
from fer_core.data.synthfaces.dataset import (
    SPLITS,
    SUBJECT_RANGES,
    VERSION,
    SampleMeta,
    SynthConfig,
    SynthFaces,
    make_identity,
    sample_meta,
)
from fer_core.data.synthfaces.render import Identity

FIRST_SUBJECT = max(hi for _, hi in SUBJECT_RANGES.values())
"""The first pretraining subject (830): one past the last subject any SynthFACS FER split uses."""
SCENE_SEED_OFFSET = 2**40
"""Added to ``seed`` for SynthFACS's sampler, so expressions, poses and scenes are drawn apart from the FER splits'."""
TASKS = ("identity", "expression")
DEFAULT_SIZES = {"train": 12000, "val": 1500, "test": 1500}  # 300 subjects: 40 / 5 / 5 faces each


@dataclass(frozen=True)
class PretrainConfig:
    """Options of ``synthfaces_pretrain``; every field is a keyword of ``build_dataset("synthfaces_pretrain", ...)``.

    Attributes:
        task: ``identity`` (classes are the subjects) or ``expression`` (SynthFACS's classes on clean faces).
        subjects: how many pretraining subjects (830 up to 830 + subjects - 1).
        image_size: side of the square RGB image in pixels.
        label_set: ``basic7`` or ``basic8`` (the ``expression`` task's classes).
        seed: the data set's seed: faces, subjects' looks and scenes.
        train_size, val_size, test_size: faces per split.
        balance: ``imbalanced`` (SynthFACS's class frequencies) or ``balanced`` expressions.
        occlusion_rate: fraction of faces with an occluder; unset: 0.22 for ``identity``, 0 for ``expression``.
        profile_rate: fraction of faces with yaw up to +-60 degrees (else near frontal, |yaw| <= 30); unset: 0.4
            for ``identity``, 0 for ``expression``.
    """

    task: str = "identity"
    subjects: int = 300
    image_size: int = 112
    label_set: str = "basic7"
    seed: int = 0
    train_size: int = DEFAULT_SIZES["train"]
    val_size: int = DEFAULT_SIZES["val"]
    test_size: int = DEFAULT_SIZES["test"]
    balance: str = "imbalanced"
    occlusion_rate: float | None = None
    profile_rate: float | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"synthfaces_pretrain option task={self.task!r} is invalid: must be one of "
                             f"{', '.join(TASKS)}")
        if not isinstance(self.subjects, int) or not 2 <= self.subjects <= 100_000:
            raise ValueError(f"synthfaces_pretrain option subjects={self.subjects!r} is invalid: must be an integer "
                             "from 2 to 100000")
        for split in SPLITS:
            if getattr(self, f"{split}_size") < 1:
                raise ValueError(f"synthfaces_pretrain option {split}_size={getattr(self, f'{split}_size')!r} is "
                                 "invalid: must be a positive integer")
        try:
            self.scene_config()  # SynthFACS checks the shared options (size, label set, balance, rates)
        except ValueError as err:
            raise ValueError(str(err).replace("synthfaces option", "synthfaces_pretrain option")) from None

    @classmethod
    def from_options(cls, **options) -> PretrainConfig:
        """Build from keyword options, naming any unknown option and listing the valid ones."""
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise ValueError(f"unknown synthfaces_pretrain option(s) {', '.join(unknown)}; valid: "
                             f"{', '.join(sorted(valid))}")
        return cls(**options)

    def scene_config(self) -> SynthConfig:
        """The SynthFACS options the expressions, poses and scenes are drawn with (never with label noise)."""
        clean = self.task == "expression"
        return SynthConfig(
            image_size=self.image_size, label_set=self.label_set, seed=self.seed + SCENE_SEED_OFFSET,
            balance=self.balance,
            occlusion_rate=(0.0 if clean else 0.22) if self.occlusion_rate is None else self.occlusion_rate,
            profile_rate=(0.0 if clean else 0.4) if self.profile_rate is None else self.profile_rate)

    @property
    def classes(self) -> tuple[str, ...]:
        if self.task == "identity":
            return tuple(subject_name(FIRST_SUBJECT + k) for k in range(self.subjects))
        return self.scene_config().classes

    def size(self, split: str) -> int:
        return int(getattr(self, f"{split}_size"))

    def to_dict(self) -> dict:
        return asdict(self)


def subject_name(subject: int) -> str:
    """The class name of a subject in the ``identity`` task: ``s0830``."""
    return f"s{subject:04d}"


@functools.lru_cache(maxsize=16)
def _scene_config(cfg: PretrainConfig) -> SynthConfig:
    return cfg.scene_config()


@functools.lru_cache(maxsize=4096)
def _identity(seed: int, subject: int) -> Identity:
    return make_identity(seed, subject)


def pretrain_meta(cfg: PretrainConfig, split: str, index: int, *, intensity: float | None = None) -> SampleMeta:
    """The parameters of sample ``index`` of ``split`` (no rendering): SynthFACS's sample under the scene seed, with
    the face of pretraining subject ``FIRST_SUBJECT + index % subjects``; ``label`` is the subject's class
    (``identity``) or the expression (``expression``). ``intensity``: as :func:`sample_meta`'s (a counterfactual)."""
    scene_cfg = _scene_config(cfg)
    scene = sample_meta(scene_cfg, split, index, intensity=intensity)
    subject = FIRST_SUBJECT + index % cfg.subjects
    identity = _identity(cfg.seed, subject)
    spec = dataclasses.replace(scene.spec, identity=identity)
    dist = label_distribution(np.clip(spec.au + identity.bias, 0, 1), scene_cfg.classes)
    label = subject - FIRST_SUBJECT if cfg.task == "identity" else scene.clean_label
    return SampleMeta(spec=spec, subject=subject, label=label, clean_label=label, label_dist=dist,
                      intensity=scene.intensity, blend=scene.blend)


@functools.lru_cache(maxsize=8)
def _split_metas(cfg: PretrainConfig, split: str) -> tuple[SampleMeta, ...]:
    return tuple(pretrain_meta(cfg, split, i) for i in range(cfg.size(split)))


class SynthFacesPretrain(SynthFaces):
    """The pretraining faces as a torch Dataset (see the module docstring); samples are served as SynthFACS's
    (:meth:`SynthFaces.__getitem__`), with ``label_dist`` only in the ``expression`` task.

    Args:
        split: ``train``, ``val`` or ``test``: different images of the same pretraining subjects.
        subset: None or ``all`` (no challenge subsets: a pretraining run is evaluated on the whole split).
        **options: fields of :class:`PretrainConfig`.
    """

    name = "synthfaces_pretrain"
    splits = tuple(SPLITS)
    subsets: tuple[str, ...] = ()
    version = VERSION

    def __init__(self, split: str = "train", subset: str | None = None, **options):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} for synthfaces_pretrain; valid: {', '.join(SPLITS)}")
        if subset not in (None, "all"):
            raise ValueError(f"synthfaces_pretrain has no subset {subset!r}; valid: all")
        self.cfg = PretrainConfig.from_options(**options)
        self.split, self.subset = split, None
        self.classes = self.cfg.classes
        self.num_classes = len(self.classes)
        self.channels = 3
        self.image_size = self.cfg.image_size
        self._metas = _split_metas(self.cfg, split)
        self.split_indices = np.arange(len(self._metas))
        self.labels = np.array([m.label for m in self._metas], dtype=np.int64)
        self.clean_labels = self.labels.copy()
        self.subjects = np.array([m.subject for m in self._metas], dtype=np.int64)
        self.soft_labels = self.cfg.task == "expression"
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def meta_at_intensity(self, i: int, intensity: float) -> SampleMeta:
        """Sample i's parameters at another expression intensity (:func:`pretrain_meta`'s ``intensity``)."""
        return pretrain_meta(self.cfg, self.split, int(self.split_indices[i]), intensity=intensity)

    @property
    def config(self) -> dict:
        return {"name": self.name, "version": VERSION, "split": self.split, "subset": "all", **self.cfg.to_dict()}

    @property
    def label_dists(self) -> np.ndarray | None:
        """The expression task's soft labels (N x C float32, as SynthFACS's); None for ``identity``."""
        return np.stack([m.label_dist for m in self._metas]).astype(np.float32) if self.soft_labels else None


def _classes(**options) -> tuple[str, ...]:
    """The classes these options give (validating every option)."""
    return PretrainConfig.from_options(**options).classes


@register_dataset("synthfaces_pretrain", description="SynthFACS pretraining faces: subjects 830 and up, which no "
                  "SynthFACS FER split uses; task identity (one class per subject, train/val/test = other images of "
                  "the same subjects) or expression (clean, near-frontal faces). Built in, no files",
                  needs_root=False, classes=_classes)
def build_synthfaces_pretrain(root=None, split: str = "train", subset: str | None = None,
                              **options) -> SynthFacesPretrain:
    """The registry's builder: generated, so a root is an error."""
    if root is not None:
        raise ValueError("synthfaces_pretrain needs no root (it is generated); remove data.root")
    return SynthFacesPretrain(split=split, subset=subset, **options)
