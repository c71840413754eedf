"""The model registry: :class:`ModelConfig`, :func:`register_model`, :func:`create_model` and the helpers every model
family shares. Families register their builders from their own modules; :mod:`fer_core.models` imports them all and
re-exports this module's names.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from fer_core.labels import CLASSES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelConfig:
    """What a model expects and where it comes from (timm's ``pretrained_cfg``).

    Attributes:
        name: registry name.
        input_size: (channels, height, width) of the images ``forward`` expects.
        mean: per-channel mean subtracted after scaling pixels to [0, 1].
        std: per-channel standard deviation divided by after that.
        num_classes: number of logits.
        class_names: name of each logit, a prefix of ``fer_core.labels.CLASSES`` for FER heads.
        target_layer: dotted module path of the default CAM layer, resolved by :func:`get_target_layer`.
        paper: the paper that introduced the architecture.
        origin: where the code or weights come from.
        licence: licence of the code and, if any, of the pretrained weights.
        pretrained: what ``pretrained=True`` loads ("" if nothing).
        backbone: names of the top-level modules that form the (pretrained) backbone; everything else is the
            head. Two-stage finetuning freezes these (``train.stages[].freeze: backbone``).
    """

    name: str
    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    num_classes: int = 7
    class_names: tuple[str, ...] = field(default_factory=lambda: CLASSES[:7])
    target_layer: str = ""
    paper: str = ""
    origin: str = ""
    licence: str = ""
    pretrained: str = ""
    backbone: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able view (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


class AttentionOutput(NamedTuple):
    """What the attention models (SCN, the region attention net) return from ``forward_attention(x)``.

    ``forward`` of those models returns ``logits`` only, so CAM tools and evaluation need no special case.

    Attributes:
        logits: ``B x C``, exactly what ``forward`` returns.
        weights: ``B x R`` attention weights, one per part (SCN: R = 1, the sample's importance; region net:
            the whole face then each region).
        part_logits: ``B x R x C`` per-part logits before weighting.
    """

    logits: torch.Tensor
    weights: torch.Tensor
    part_logits: torch.Tensor


Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, tuple[Builder, ModelConfig]] = {}


def register_model(cfg: ModelConfig) -> Callable[[Builder], Builder]:
    """Decorator registering a builder ``fn(*, num_classes, pretrained=False, **kw) -> nn.Module`` under ``cfg.name``.

    Raises:
        ValueError: the name is already registered.
    """
    if not isinstance(cfg, ModelConfig):
        raise TypeError("use @register_model(ModelConfig(name=..., ...)): every model declares its config")

    def decorator(fn: Builder) -> Builder:
        if cfg.name in _REGISTRY:
            other = _REGISTRY[cfg.name][0]
            raise ValueError(f"model {cfg.name!r} is already registered (by {other.__module__}.{other.__name__})")
        _REGISTRY[cfg.name] = (fn, cfg)
        return fn

    return decorator


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def _entry(name: str) -> tuple[Builder, ModelConfig]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(list_models())}") from None


def model_info(name: str) -> ModelConfig:
    """The default :class:`ModelConfig` of a registered model, without building it."""
    return _entry(name)[1]


def create_model(
    name: str,
    *,
    num_classes: int,
    pretrained: bool | None = None,
    class_names: Sequence[str] | None = None,
    input_size: int | tuple[int, int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model with a ``num_classes`` head and attach its resolved config as ``model.cfg``.

    Args:
        name: a name from :func:`list_models`.
        num_classes: number of output logits.
        pretrained: load the variant's pretrained weights (see ``model_info(name).pretrained``); ``None`` takes the
            variant's default (False, except for variants named after their weights such as
            ``mini_xception_fer2013``).
        class_names: names of the logits (default: the variant's own class names when it has ``num_classes`` of
            them, else the first ``num_classes`` canonical classes). A builder with a pretrained FER head receives
            them and orders its outputs to match.
        input_size: override the default input height/width (an int for square input). A builder with an
            ``input_size`` parameter receives the resolved ``(height, width)`` (to refuse sizes it cannot take).
        **kwargs: builder-specific options (e.g. ``drop_rate``, ``weights_path``).
    """
    fn, cfg = _entry(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1 (got {num_classes})")
    if class_names is None:
        if len(cfg.class_names) == num_classes:
            class_names = cfg.class_names
        else:
            class_names = CLASSES[:num_classes] if num_classes <= len(CLASSES) else [str(i) for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes: {list(class_names)}")
    size = cfg.input_size[1:]
    if input_size is not None:
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    call = dict(kwargs, num_classes=num_classes)
    if pretrained is not None:
        call["pretrained"] = bool(pretrained)
    params = inspect.signature(fn).parameters
    if "class_names" in params:
        call["class_names"] = tuple(class_names)
    if "input_size" in params:  # a builder whose architecture depends on it (PAtt-Lite refuses a 1x1 patch map)
        call["input_size"] = tuple(size)
    model = fn(**call)
    # a model built around another registered model (SCN or the region net on a chosen backbone) takes that
    # model's input format and CAM layer: the builder leaves them in ``model.cfg_overrides``
    cfg = dataclasses.replace(cfg, **getattr(model, "cfg_overrides", {}))
    if input_size is None:
        size = cfg.input_size[1:]
    chans = int(kwargs.get("in_chans", cfg.input_size[0]))
    mean, std = _per_channel(cfg.mean, chans), _per_channel(cfg.std, chans)
    model.cfg = dataclasses.replace(cfg, num_classes=num_classes, class_names=tuple(class_names),
                                    input_size=(chans, *size), mean=mean, std=std)
    return model


def attach_backbone(owner: nn.Module, name: str, *, pretrained: bool = False, weights_path: str | None = None,
                    options: dict | None = None) -> nn.Module:
    """Give ``owner`` (SCN, the region net) a registered model without its classifier as ``owner.backbone``.

    The model must have the timm-style split (``forward_features``, ``forward_head(x, pre_logits=True)``,
    ``num_features``) and its classifier in ``fc``, which is replaced by ``nn.Identity``. The owner takes the
    backbone's input format (``owner.cfg_overrides``, read by :func:`create_model`) and its weights' load report.
    """
    opts = dict(options or {})
    if weights_path:
        opts["weights_path"] = weights_path
    backbone = create_model(name, num_classes=1, pretrained=pretrained, **opts)
    if not isinstance(getattr(backbone, "fc", None), nn.Linear) or not hasattr(backbone, "num_features"):
        usable = ("resnet18", "resnet50", "eca_resnet18", "small_cnn", "vgg_fer", "shufflenet_v2")
        raise ValueError(f"{name} cannot be used as a backbone here (it has no fc classifier to replace); "
                         f"use one of: {', '.join(usable)}")
    backbone.fc = nn.Identity()
    owner.backbone = backbone
    if pretrained:
        owner.load_report = backbone.load_report
    bcfg = backbone.cfg
    owner.cfg_overrides = dict(input_size=bcfg.input_size, mean=bcfg.mean, std=bcfg.std)
    return backbone


def _per_channel(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """Normalisation constants for ``channels`` input channels (a grey model built for RGB input and back)."""
    if len(values) == channels:
        return tuple(values)
    if len(values) == 1:
        return tuple(values) * channels
    return (sum(values) / len(values),) * channels


def get_target_layer(model: nn.Module, name: str | None = None) -> nn.Module:
    """The module at dotted path ``name`` (default ``model.cfg.target_layer``), e.g. for Grad-CAM."""
    path = name or getattr(getattr(model, "cfg", None), "target_layer", "")
    if not path:
        raise ValueError(f"{type(model).__name__} declares no CAM target layer; pass one explicitly")
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [n for n, m in model.named_modules() if n and len(list(m.children())) > 0][:20]
        raise ValueError(f"no module {path!r} in {type(model).__name__}; "
                         f"some valid paths: {', '.join(names)}") from None


def count_params(model: nn.Module, trainable_only: bool = False, with_bn_stats: bool = False) -> int:
    """Number of parameters.

    Args:
        model: the model.
        trainable_only: count only parameters with ``requires_grad``.
        with_bn_stats: also count BatchNorm running means and variances, as Keras's ``model.summary()`` does
            (its "Total params"); papers with Keras code (mini-Xception, PAtt-Lite) quote that figure.
    """
    n = sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
    if with_bn_stats:
        n += sum(b.numel() for name, b in model.named_buffers() if name.rsplit(".", 1)[-1] in ("running_mean",
                                                                                            "running_var"))
    return n
