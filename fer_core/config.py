"""Validated run configs: pydantic models loaded from YAML, with ``--set key.sub=value`` overrides.

Every section forbids unknown keys, and every error names the key path, the bad value and what is valid::

    train.optimizer.lr: must be > 0 (got -0.1)
    unknown key 'data.nmae' (valid: name, root, options)

The resolved config (defaults filled in) is written into each run as ``config.yaml`` by :meth:`Config.to_yaml`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(ValueError):
    """A config that cannot be used; ``str(err)`` is one line per problem, each naming the key path."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        self.source = source
        head = f"invalid config {source}:\n" if source else "invalid config:\n"
        super().__init__(head + "\n".join(f"  {p}" for p in problems))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class DataConfig(_Section):
    """Which data set to train on; ``options`` go to ``fer_core.data.build_dataset`` as keyword arguments."""

    name: str = "synthfaces"
    root: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

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
    left unset takes the model's default (``python -m fer_core models`` lists what each would load)."""

    name: str = "small_cnn"
    pretrained: bool | None = None
    weights_path: str | None = None
    input_size: int | None = Field(default=None, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from fer_core.models import list_models

        if name not in list_models():
            raise ValueError(f"unknown model {name!r}; valid: {', '.join(list_models())}")
        return name


class OptimizerConfig(_Section):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(default=0.05, gt=0)
    weight_decay: float = Field(default=5e-4, ge=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = False


class SchedulerConfig(_Section):
    """Learning-rate schedule, stepped once per epoch. ``step``: x``gamma`` every ``step_size`` epochs;
    ``exponential``: x``gamma`` every epoch; ``cosine``: half a cosine from ``lr`` towards ``min_lr``, reached
    just after the last epoch. ``warmup_epochs`` ramps up linearly first."""

    name: Literal["none", "step", "cosine", "exponential"] = "cosine"
    step_size: int = Field(default=10, gt=0)
    gamma: float = Field(default=0.1, gt=0, le=1)
    min_lr: float = Field(default=0.0, ge=0)
    warmup_epochs: int = Field(default=0, ge=0)


class AugmentConfig(_Section):
    """Batch augmentation on the training split (at the model's input size)."""

    hflip: bool = True
    crop_padding: int = Field(default=4, ge=0)


class TrainConfig(_Section):
    """How to train. ``channels_last`` stores conv activations NHWC (faster on CPUs and tensor cores)."""

    epochs: int = Field(default=10, gt=0)
    batch_size: int = Field(default=64, gt=0)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    device: str = "cpu"
    num_workers: int = Field(default=0, ge=0)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    eval_every: int = Field(default=1, gt=0)
    channels_last: bool = True

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
            raise ValueError(f"must be cpu, cuda or cuda:N (got {device!r})")
        return device


class EvalConfig(_Section):
    """What the final evaluation covers. ``subsets: null`` means ``all`` plus every subset of the data set."""

    splits: list[Literal["train", "val", "test"]] = Field(default_factory=lambda: ["test"])
    subsets: list[str] | None = None


class Config(_Section):
    """A whole run: ``name``, ``seed`` and the ``data``, ``model``, ``train``, ``eval`` sections."""

    name: str = "run"
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelSection = Field(default_factory=ModelSection)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        """The resolved config as plain YAML/JSON-able data."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        """The resolved config as YAML text (what a run stores in ``config.yaml``)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --------------------------------------------------------------------------------------------- errors
def _fields_at(loc: tuple) -> list[str] | None:
    """Valid keys of the section at ``loc`` (a pydantic error location), or None for free-form dicts."""
    model: Any = Config
    for part in loc:
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return None
        model = field.annotation
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else None


_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"),
           "less_than_equal": ("le", "<=")}


def _describe(err: Mapping[str, Any]) -> str:
    loc = tuple(str(p) for p in err["loc"])
    key = ".".join(loc) or "<top>"
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        valid = _fields_at(loc[:-1])
        return f"unknown key {key!r}" + (f" (valid: {', '.join(valid)})" if valid else "")
    if kind in _BOUNDS:
        name, op = _BOUNDS[kind]
        bound = ctx.get(name)
        shown = f"{bound:g}" if isinstance(bound, (int, float)) else bound
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
def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Apply ``key.sub=value`` overrides to nested dict ``data`` in place; values are parsed as YAML scalars."""
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError([f"--set expects key.sub=value, e.g. train.epochs=3 (got {item!r})"])
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        node = data
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError([f"--set {key}: {where} is a value ({child!r}), not a section"])
            node = child
        node[parts[-1]] = value
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
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
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
