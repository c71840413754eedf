"""Validated run configs: pydantic models loaded from YAML, with ``--set key.sub=value`` overrides.

Every section forbids unknown keys, and every error names the key path, the bad value and what is valid::

    train.optimizer.lr: must be > 0 (got -0.1)
    unknown key 'data.nmae' (valid: name, root, options)

The resolved config (defaults filled in) is written into each run as ``config.yaml`` by :meth:`Config.to_yaml`.
"""

from __future__ import annotations

import json
import os
import re
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from fer_core import io


class ConfigError(ValueError):
    """A config that cannot be used; ``str(err)`` is one line per problem, each naming the key path."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        self.source = source
        head = f"invalid config {source}:\n" if source else "invalid config:\n"
        super().__init__(head + "\n".join(f"  {p}" for p in problems))


def _numeric(annotation: Any) -> bool:
    """Whether a field holds a number (``int``, ``float``, or either or None), not a yes/no value."""
    kinds = set(typing.get_args(annotation)) - {type(None)} if typing.get_args(annotation) else {annotation}
    return bool(kinds) and kinds <= {int, float}


class _Section(BaseModel):
    # No infinities or NaNs anywhere (an infinite learning rate would only fail after the run started).
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_yes_no_numbers(cls, data: Any) -> Any:
        # YAML's true/false would otherwise pass as 1/0 (``epochs: true`` training one epoch); as text they fail
        # the field's own number check, so the error names the key
        if isinstance(data, Mapping) and any(isinstance(v, bool) for v in data.values()):
            data = {k: str(v).lower() if isinstance(v, bool) and k in cls.model_fields
                    and _numeric(cls.model_fields[k].annotation) else v for k, v in data.items()}
        return data


class DataConfig(_Section):
    """Which data set to train on; ``options`` go to ``fer_core.data.build_dataset`` as keyword arguments.

    ``label_noise``: the share of training labels made wrong (the clean labels are kept to measure relabelling).
    ``label_noise_mode``: ``uniform`` flips each label with that probability to a uniformly random *different*
    class (the SCN protocol; the flips depend on ``seed`` only); ``ambiguous`` gives the most ambiguous faces their
    second most likely class, image-dependent noise like an annotator's (needs a data set with label distributions:
    SynthFACS, FERPlus; :func:`fer_core.losses.inject_ambiguous_label_noise`).
    ``shuffle_labels``: permute the training split's labels with the run's seed (the same multiset of labels, no
    relation left between face and label; :func:`fer_core.losses.shuffle_labels`), for the data-randomisation
    sanity check of explanations (Adebayo et al. 2018): such a model can only memorise, and its validation and
    test accuracy sits at chance. Validation and test labels are left as they are."""

    name: str = "synthfaces"
    root: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    label_noise: float = Field(default=0.0, ge=0, lt=1)
    label_noise_mode: Literal["uniform", "ambiguous"] = "uniform"
    shuffle_labels: bool = False

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        try:
            from fer_core.data import list_datasets
        except ImportError:  # data layer not installed yet: build_dataset will report it
            return name
        valid = list(list_datasets())
        if name not in valid:
            raise ValueError(f"unknown data set {name!r}; valid: {', '.join(valid)}")
        return name


class ModelSection(_Section):
    """Which model to build. ``input_size`` overrides the model's default square input size; ``pretrained``
    left unset takes the model's default (``python -m fer_core models`` lists what each would load).

    ``init_from``: start the model's backbone from a finished run (its id or folder; e.g. a pretraining run on
    ``synthfaces_pretrain``) or a ``.safetensors`` weights file, loaded strictly; the head starts new. What
    matched is written to the run's log (``fer_core.runs.init_backbone`` has the rule)."""

    name: str = "small_cnn"
    pretrained: bool | None = None
    weights_path: str | None = None
    init_from: str | None = None
    input_size: int | None = Field(default=None, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from fer_core.models import list_models

        if name not in list_models():
            raise ValueError(f"unknown model {name!r}; valid: {', '.join(list_models())}")
        return name

    @field_validator("init_from", mode="before")
    @classmethod
    def _init_text(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None  # an empty box in the app: start from scratch
        return value.strip() if isinstance(value, str) else value

    @field_validator("init_from")
    @classmethod
    def _one_backbone_source(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value and info.data.get("pretrained"):
            raise ValueError(f"{value!r} and model.pretrained: true would both set the backbone's weights; set "
                             "model.pretrained=false to start from init_from, or unset init_from")
        return value


class SAMConfig(_Section):
    """Sharpness-aware minimisation (Foret et al., ICLR 2021) around the optimiser: ``rho`` is the radius of the
    neighbourhood; ``adaptive`` scales it per parameter (ASAM, Kwon et al., ICML 2021)."""

    enabled: bool = False
    rho: float = Field(default=0.05, gt=0)
    adaptive: bool = False


class OptimizerConfig(_Section):
    """The optimiser. Weight decay is not applied to biases and normalisation parameters."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(default=0.05, gt=0)
    weight_decay: float = Field(default=5e-4, ge=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = False
    sam: SAMConfig = Field(default_factory=SAMConfig)


class SchedulerConfig(_Section):
    """Learning-rate schedule, stepped once per epoch (after a linear ``warmup_epochs`` ramp).

    ``step``: x``gamma`` every ``step_size`` epochs; ``multistep``: x``gamma`` at each of ``milestones``;
    ``exponential``: x``gamma`` every epoch; ``cosine``: half a cosine from ``lr`` towards ``min_lr``, reached just
    after the last epoch; ``plateau``: x``gamma`` when validation accuracy has not improved for ``patience``
    epochs (not below ``min_lr``); ``inverse_time``: ``lr / (1 + decay_rate * epoch / decay_epochs)`` (Keras's
    InverseTimeDecay, per epoch)."""

    name: Literal["none", "step", "multistep", "exponential", "cosine", "plateau", "inverse_time"] = "cosine"
    step_size: int = Field(default=10, gt=0)
    milestones: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [30, 60])
    gamma: float = Field(default=0.1, gt=0, le=1)
    min_lr: float = Field(default=0.0, ge=0)
    warmup_epochs: int = Field(default=0, ge=0)
    patience: int = Field(default=3, ge=0)
    decay_rate: float = Field(default=1.0, ge=0)
    decay_epochs: float = Field(default=1.0, gt=0)


class AugmentConfig(_Section):
    """Batch augmentation on the training split, done on whole batches at the model's input size.

    ``hflip``: mirror with probability 0.5. ``crop_padding``: pad (reflect) and crop back at a random offset.
    ``rotation``: rotate by a uniform angle in [-rotation, rotation] degrees. ``brightness`` / ``contrast``: scale
    brightness / contrast by a factor uniform in [1 - x, 1 + x]. ``random_erasing``: probability of erasing one
    rectangle of ``erasing_scale`` of the area (aspect 0.3-3.3, filled with noise; Zhong et al., 2020).
    ``gaussian_noise``: probability of adding N(0, ``noise_std``) noise to the [0, 1] image; with
    ``flip_or_noise`` it is instead the probability that an image gets one of the two, the flip or the noise, 50/50
    and never both (the SCN reference: ``gaussian_noise: 0.5``, ``noise_std`` about 0.0215)."""

    hflip: bool = True
    crop_padding: int = Field(default=4, ge=0)
    rotation: float = Field(default=0.0, ge=0, le=180)
    brightness: float = Field(default=0.0, ge=0, lt=1)
    contrast: float = Field(default=0.0, ge=0, lt=1)
    random_erasing: float = Field(default=0.0, ge=0, le=1)
    erasing_scale: tuple[float, float] = (0.02, 0.25)
    gaussian_noise: float = Field(default=0.0, ge=0, le=1)
    noise_std: float = Field(default=0.05, ge=0)
    flip_or_noise: bool = False

    @field_validator("erasing_scale")
    @classmethod
    def _scale(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1] < 1:
            raise ValueError(f"must be two fractions 0 < low <= high < 1 (got {list(value)})")
        return value


class StandardMethod(_Section):
    """Cross-entropy on the (possibly smoothed, class-weighted) hard labels."""

    name: Literal["standard"] = "standard"


class SCNMethod(_Section):
    """Self-Cure Network training (Wang et al., CVPR 2020); needs ``model.name: scn``.

    Logit-weighted cross-entropy ``L_WCE`` and rank regularisation ``L_RR = max(0, margin_1 - (mean high - mean
    low))`` over the batch's importance weights split at the top ``beta`` fraction. ``loss``: ``paper`` is
    ``gamma * L_RR + (1 - gamma) * L_WCE``; ``code`` is the authors' ``train.py``, ``L_WCE + L_RR`` unweighted
    (``gamma`` unused; with gamma 0.5 the paper's loss is exactly half of it).

    Relabelling: a sample is relabelled to its argmax when ``P_max - P_given > margin_2``, P the softmax of the
    weighted logits (as the authors' code computes it). ``relabel_scope``: ``low`` (the paper) only in the batch's
    low-importance group, ``all`` (the authors' code) every sample of the batch. ``relabel_start``: ``epoch``
    from 0-based epoch ``relabel_epoch`` on (the authors' ``--relabel_epoch 10`` counts epochs from 1, so it is
    ``relabel_epoch: 9`` here); ``plateau`` from the epoch after validation accuracy has not improved (strictly) for
    ``relabel_patience`` epochs (counted at validated epochs, as early stopping does; ``relabel_epoch`` unused).
    Once started, relabelling stays on."""

    name: Literal["scn"] = "scn"
    beta: float = Field(default=0.7, gt=0, lt=1)
    margin_1: float = Field(default=0.15, ge=0)
    margin_2: float = Field(default=0.2, ge=0)
    gamma: float = Field(default=0.5, ge=0, le=1)
    loss: Literal["paper", "code"] = "paper"
    relabel_scope: Literal["low", "all"] = "low"
    relabel_start: Literal["epoch", "plateau"] = "epoch"
    relabel_epoch: int = Field(default=10, ge=0)
    relabel_patience: int = Field(default=3, ge=1)


class LDLMethod(_Section):
    """Label distribution learning: soft targets from the data set (``source: dataset``: SynthFACS ``label_dist``,
    FERPlus votes) or from a frozen teacher run's softmax (``source: teacher``, EfficientFace's label
    distribution generator). Loss: soft-target cross-entropy (``ce``) or KL divergence (``kl``; same gradients),
    plus ``hard_weight`` x cross-entropy on the hard labels."""

    name: Literal["ldl"] = "ldl"
    source: Literal["dataset", "teacher"] = "dataset"
    teacher_run: str | None = None
    loss: Literal["ce", "kl"] = "ce"
    hard_weight: float = Field(default=0.0, ge=0)
    temperature: float = Field(default=1.0, gt=0)


class PseudoLabelMethod(_Section):
    """Pseudo labels (the seed method's module): a teacher run (e.g. ResNet-50) gives soft targets for each
    training image; loss ``(1 - hard_weight) * CE(soft) + hard_weight * CE(hard)``."""

    name: Literal["pseudo_label"] = "pseudo_label"
    teacher_run: str
    hard_weight: float = Field(default=0.0, ge=0, le=1)
    temperature: float = Field(default=1.0, gt=0)


Method = Annotated[StandardMethod | SCNMethod | LDLMethod | PseudoLabelMethod, Field(discriminator="name")]
_METHOD_TAGS = ("standard", "scn", "ldl", "pseudo_label")


class RegionBiasConfig(_Section):
    """RAN's region-biased loss for models with part attention (``ran``, ``region_attention``):
    ``weight * mean over the batch of max(0, margin - (max region weight - whole-face weight))``, on the weights
    ``forward_attention`` returns (``ran``: the softmaxed self-attention weights, as RAN's code). Off by default;
    RAN's code uses weight 1 and margin 0.1 (``configs/recipes/ran_ferplus.yaml``)."""

    weight: float = Field(default=0.0, ge=0)
    margin: float = Field(default=0.1, ge=0)


class TrackingConfig(_Section):
    """Trackers the run also writes to (:mod:`fer_core.tracking`; the run folder stays the source of truth).
    ``tensorboard``: event files in ``<run>/tensorboard`` (`tensorboard --logdir runs`). ``mlflow_uri``: an MLflow
    tracking URI (a server, ``sqlite:///mlflow.db``, ...; needs the ``mlflow`` or ``mlflow-skinny`` package) to log
    into as well; ``mlflow_experiment``: its experiment (default: the run's group, else ``fer-lab``)."""

    tensorboard: bool = True
    mlflow_uri: str | None = None
    mlflow_experiment: str | None = None


class EarlyStoppingConfig(_Section):
    """Stop when validation accuracy has not improved for ``patience`` epochs (null: never); ``restore_best``
    reloads the best weights of the stage when it ends."""

    patience: int | None = Field(default=None, ge=1)
    restore_best: bool = True


class StageConfig(_Section):
    """One stage of a multi-stage schedule (PAtt-Lite: train the head, then finetune). Unset fields take the
    ``train`` section's values.

    ``freeze: backbone`` freezes the model's pretrained backbone (``model.cfg.backbone``); ``unfreeze_last: N``
    then unfreezes its last N layers (modules with parameters, counted from the end); ``freeze_bn`` keeps every
    backbone BatchNorm in inference mode with frozen statistics and parameters. ``drop_rate`` calls the model's
    ``set_drop_rates`` (PAtt-Lite's finetune-stage dropouts)."""

    name: str = "stage"
    epochs: int = Field(gt=0)
    optimizer: OptimizerConfig | None = None
    scheduler: SchedulerConfig | None = None
    early_stopping: EarlyStoppingConfig | None = None
    freeze: Literal["none", "backbone"] = "none"
    unfreeze_last: int | None = Field(default=None, ge=0)
    freeze_bn: bool = False
    drop_rate: float | None = Field(default=None, ge=0, lt=1)


class TrainConfig(_Section):
    """How to train.

    ``precision``: ``bf16``/``fp16`` autocast on CUDA (fp16 with loss scaling); ignored with a log line on the CPU.
    ``channels_last`` stores conv activations NHWC (faster on CPUs and tensor cores). ``class_weights:
    balanced`` weights the loss by ``n / (k * count(class))``. ``grad_clip_norm`` clips the global gradient norm.
    ``stages``: a list of stages (see :class:`StageConfig`); without it, one stage of ``epochs``.
    ``data_placement``: where the images live while training (:mod:`fer_core.batches`): ``auto`` (on the GPU when
    they fit, in host memory otherwise, streamed from disk when even that is too small; the log says which),
    ``device``, ``host`` or ``stream``. ``num_workers``: processes decoding images for the ``stream`` placement.
    ``compile``: run the model through ``torch.compile`` (a one-off compilation, then faster steps on GPUs).
    On CUDA the optimisers are fused kernels and the loop reads a value back from the GPU only every 20 batches.
    ``tracking``: TensorBoard (on by default) and MLflow copies of curves and evaluation (:class:`TrackingConfig`)."""

    epochs: int = Field(default=10, gt=0)
    batch_size: int = Field(default=64, gt=0)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    method: Method = Field(default_factory=StandardMethod)
    device: str = "cpu"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    deterministic: bool = False
    num_workers: int = Field(default=0, ge=0)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    class_weights: Literal["none", "balanced"] = "none"
    grad_clip_norm: float | None = Field(default=None, gt=0)
    region_bias: RegionBiasConfig = Field(default_factory=RegionBiasConfig)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    stages: list[StageConfig] | None = None
    eval_every: int = Field(default=1, gt=0)
    channels_last: bool = True
    data_placement: Literal["auto", "device", "host", "stream"] = "auto"
    compile: bool = False

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
            raise ValueError(f"must be cpu, cuda or cuda:N (got {device!r})")
        return device

    @field_validator("stages")
    @classmethod
    def _stages(cls, stages: list[StageConfig] | None) -> list[StageConfig] | None:
        if stages is not None and not stages:
            raise ValueError("give at least one stage, or leave stages unset for a single stage of train.epochs")
        return stages

    @model_validator(mode="after")
    def _sam_precision(self) -> TrainConfig:
        if self.precision == "fp16" and any(st.optimizer.sam.enabled for st in self.resolved_stages()):
            raise ValueError("train.precision fp16 cannot be combined with SAM (its two gradient passes do not "
                             "fit loss scaling); use precision bf16 or fp32")
        return self

    def resolved_stages(self) -> list[StageConfig]:
        """The stages with every unset field filled from this section (one stage when ``stages`` is unset)."""
        if not self.stages:
            return [StageConfig(name="train", epochs=self.epochs, optimizer=self.optimizer,
                                scheduler=self.scheduler, early_stopping=self.early_stopping)]
        return [st.model_copy(update={"optimizer": st.optimizer or self.optimizer,
                                      "scheduler": st.scheduler or self.scheduler,
                                      "early_stopping": st.early_stopping or self.early_stopping})
                for st in self.stages]

    @property
    def total_epochs(self) -> int:
        return sum(st.epochs for st in self.resolved_stages())


class EvalConfig(_Section):
    """What the final evaluation covers. ``subsets: null`` means ``all`` plus every subset of the data set."""

    splits: list[Literal["train", "val", "test"]] = Field(default_factory=lambda: ["test"])
    subsets: list[str] | None = None


class Config(_Section):
    """A whole run: ``name``, ``seed``, the ``data``, ``model``, ``train``, ``eval`` sections; ``group`` and ``tags``
    tie the runs of a sweep or ablation together (``tags`` holds each run's swept values)."""

    name: str = "run"
    seed: int = Field(default=0, ge=0, lt=2**32)
    group: str | None = None
    tags: dict[str, Any] = Field(default_factory=dict)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelSection = Field(default_factory=ModelSection)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @field_validator("group")
    @classmethod
    def _group_is_a_folder_name(cls, group: str | None) -> str | None:
        if group is None:
            return group
        try:  # a group names a folder (<runs>/.sweeps/<group>): a run id's rule
            io.check_run_id(group)
        except ValueError:
            raise ValueError(f"{group!r} is not a valid group name: one folder name of letters, digits, '.', '_' "
                             "and '-' (not starting with '.' or '-', no '/', no '..', at most 200 characters)"
                             ) from None
        return group

    def to_dict(self) -> dict:
        """The resolved config as plain YAML/JSON-able data."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        """The resolved config as YAML text (what a run stores in ``config.yaml``)."""
        return io.dump_yaml(self.to_dict())


# --------------------------------------------------------------------------------------------- errors
def _is_section(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _tagged_members(annotation: Any) -> dict[str, type[BaseModel]]:
    """Members of a tagged union section (``train.method``) by their ``name`` tag."""
    members = [a for a in typing.get_args(annotation) if _is_section(a)]
    return {m.model_fields["name"].default: m for m in members if "name" in m.model_fields}


def _fields_at(loc: tuple) -> list[str] | None:
    """Valid keys of the section at ``loc`` (a pydantic error location), or None for free-form dicts."""
    model: Any = Config
    for part in loc:
        if not _is_section(model) and part in _tagged_members(model):
            model = _tagged_members(model)[part]
            continue
        field = model.model_fields.get(part) if _is_section(model) else None
        if field is None:
            return None
        model = field.annotation
        if typing.get_origin(model) is Annotated:
            model = typing.get_args(model)[0]
    return list(model.model_fields) if _is_section(model) else None


def _key(loc: tuple) -> str:
    """Dotted key path without the tag that pydantic inserts for tagged unions (``train.method.scn.beta``)."""
    parts = [str(p) for p in loc]
    keep = [p for i, p in enumerate(parts) if not (i and parts[i - 1] == "method" and p in _METHOD_TAGS)]
    return ".".join(keep) or "<top>"


_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"),
           "less_than_equal": ("le", "<=")}


def _describe(err: Mapping[str, Any]) -> str:
    loc = tuple(str(p) for p in err["loc"])
    key = _key(loc)
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        valid = _fields_at(loc[:-1])
        return f"unknown key {key!r}" + (f" (valid: {', '.join(valid)})" if valid else "")
    if kind in _BOUNDS:
        name, op = _BOUNDS[kind]
        bound = ctx.get(name)
        shown = bound if isinstance(bound, int) else f"{bound:g}" if isinstance(bound, float) else bound
        return f"{key}: must be {op} {shown} (got {value!r})"
    if kind == "literal_error":
        return f"{key}: must be one of {ctx.get('expected')} (got {value!r})"
    if kind == "value_error":
        return f"{key}: {str(ctx.get('error', err['msg']))}"
    if kind == "model_type":
        return f"{key}: must be a mapping of keys (got {value!r})"
    if kind == "missing":
        return f"{key}: required"
    return f"{key}: {err['msg'][0].lower()}{err['msg'][1:]} (got {value!r})"


def _validate(data: Any, source: str | None) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError([f"the top level must be a mapping of sections (got {type(data).__name__})"], source)
    try:
        return Config.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError([_describe(e) for e in err.errors()], source) from None


# --------------------------------------------------------------------------------------------- loading
def parse_value(text: str) -> Any:
    """A value typed as text (``--set``, a sweep's grid or variant, a box in the app), read as one YAML 1.2 scalar or
    flow collection: ``0.1``, ``1e-3``, ``-2.5E+4``, ``.5``, ``0x10`` are numbers; ``true``/``false`` booleans;
    ``null``, ``~`` and empty text None; ``[1, 2]`` and ``{a: 1}`` a list and a dict; anything else (``adamw``,
    ``yes``, ``1:30``) the text itself. The one parser of every ``key=value`` text (:func:`fer_core.io.load_yaml`)."""
    if not text.strip():
        return None
    try:
        return io.load_yaml(text)
    except yaml.YAMLError:
        return text.strip()


def format_value(value: Any) -> str:
    """A swept value as short text for names and tables: ``0.01``, ``true``, ``resnet18``, ``[1, 2]``."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def split_override(item: str, what: str = "--set", example: str = "key.sub=value, e.g. train.epochs=3"
                   ) -> tuple[str, str]:
    """``"key.sub=text"`` as ``(key, text)``; ConfigError (naming ``what`` and an ``example``) when it is not one."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part.strip() for part in key.split(".")):
        raise ConfigError([f"{what} expects {example} (got {item!r})"])
    return key, text


def set_key(data: dict, key: str, value: Any, what: str = "--set") -> None:
    """Set dotted ``key`` in nested ``data``: missing sections are created, a value is never descended into."""
    parts = key.split(".")
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError([f"{what} {key}: {where} is a value ({child!r}), not a section".lstrip()])
        node = child
    node[parts[-1]] = value


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Apply ``key.sub=value`` overrides to nested dict ``data`` in place (values by :func:`parse_value`)."""
    for item in overrides:
        key, text = split_override(item)
        set_key(data, key, parse_value(text))
    return data


def load_config(
    source: str | os.PathLike | Mapping[str, Any] | Config | None = None, overrides: Iterable[str] = ()
) -> Config:
    """Build a validated :class:`Config` from a YAML file, a dict or a Config, then apply ``overrides``.

    Raises:
        ConfigError: a key or value is wrong; the message names the key path, the value and what is valid.
        FileNotFoundError: the YAML file does not exist.
    """
    label = None
    if source is None:
        data: Any = {}
    elif isinstance(source, Config):
        data = source.to_dict()
    elif isinstance(source, Mapping):
        data = _plain(source)
    elif not isinstance(source, (str, os.PathLike)):
        data = source  # rejected by _validate with a clear message
    else:
        path = Path(source)
        label = str(path)
        if not path.exists():
            raise FileNotFoundError(f"config file {path} does not exist")
        try:
            data = io.load_yaml(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ConfigError([f"not valid YAML: {err}"], label) from None
        data = {} if data is None else data
    if isinstance(data, dict):
        apply_overrides(data, overrides)
    return _validate(data, label)


def _plain(obj: Any) -> Any:
    """Deep copy of nested mappings/lists into plain dicts/lists, so overrides never touch the caller's data."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
