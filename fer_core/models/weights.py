"""Loading weights into models: strict, with a report of what matched, what is new and what was left out.

The Self-Cure Network reference code loads ImageNet weights with ``strict=False`` into differently named keys, so
nothing is loaded and nothing is said. Here every load goes through :func:`load_state_dict`, which

* loads only when every model tensor is either found with the right shape or explicitly declared new
  (``new=("fc.",)`` for a fresh classifier head), and every file tensor is used or explicitly declared dropped
  (``drop=("fc.",)`` for the ImageNet classifier);
* otherwise raises :class:`WeightsMismatchError`, whose message lists the missing, unexpected and mis-shaped keys;
* returns a :class:`LoadReport`, which builders keep as ``model.load_report`` so the trainer can log it.

Sources: :func:`read_state_dict` reads a local ``.safetensors`` file, or a pickled ``.pth``/``.pt`` with
``torch.load(weights_only=True)`` (a checkpoint is data, never code). :func:`torchvision_state_dict` and
:func:`timm_state_dict` fetch ImageNet weights through those libraries' caches and, when that fails (offline),
raise an error that says how to provide a local file instead.

Backbones (``model.init_from``, see :func:`fer_core.runs.init_backbone`): :func:`backbone_state` gives a model's
backbone tensors keyed relative to the registered model that holds them (SCN and the region nets are looked
through to their ``backbone.`` model), and :func:`load_backbone` puts such tensors under another model's backbone,
strictly, with a :class:`LoadReport`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn


class WeightsMismatchError(ValueError):
    """A state dict does not fit a model; the message lists the keys."""


@dataclass
class LoadReport:
    """What a load did. ``new`` are model tensors left at their initialisation on purpose (e.g. a fresh head),
    ``dropped`` are file tensors not used on purpose (e.g. the ImageNet classifier or truncated layers)."""

    source: str
    matched: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs: ``loaded 120 tensors from X; new: fc.weight, fc.bias; dropped: 2 (fc.weight, ...)``."""
        parts = [f"loaded {len(self.matched)} tensors from {self.source}"]
        if self.new:
            parts.append(f"new (initialised): {_head(self.new)}")
        if self.dropped:
            parts.append(f"not used: {_head(self.dropped)}")
        return "; ".join(parts)


def load_error(err: BaseException) -> str:
    """One line for an error from ``torch.load`` / safetensors: the refused global of a pickle that needs code
    (torch's message is a page of advice), else the first line of the message."""
    text = str(err)
    if "WeightsUnpickler error:" in text:  # what the restricted unpickler refused, e.g. "Unsupported global: exec"
        text = text.split("WeightsUnpickler error:", 1)[1].split(". Please")[0]
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _head(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def _matches(key: str, prefixes: Iterable[str]) -> bool:
    return any(key.startswith(p) or (p.startswith(".") and p in key) for p in prefixes)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a pickled ``.pth``/``.pt``/``.bin`` loaded with
    ``weights_only=True`` (a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped).

    Raises:
        FileNotFoundError: no such file.
        WeightsMismatchError: the file holds no tensors, is truncated, or is not a state dict.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated files and refused pickles raise many types
        raise WeightsMismatchError(
            f"cannot read weights {path} ({load_error(err)}); is it a complete .safetensors or "
            "PyTorch state-dict file? Pickled files that need code to load are refused on purpose.") from err
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsMismatchError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel checkpoints


def load_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str = "state dict",
                    new: Iterable[str] = (), drop: Iterable[str] = ()) -> LoadReport:
    """Load ``state`` into ``model`` strictly and report what happened.

    Args:
        model: the module to fill.
        state: tensors by name.
        source: where they come from, for messages.
        new: key prefixes of model tensors that may be absent from ``state`` (they keep their initialisation);
            a prefix starting with "." matches anywhere in the key.
        drop: key prefixes of ``state`` tensors that are never loaded (e.g. ``"fc."``: an ImageNet classifier is
            not loaded into a FER head even when the shapes agree).

    Raises:
        WeightsMismatchError: a model tensor is missing, a file tensor is unexpected, or shapes differ.
    """
    new, drop = tuple(new), tuple(drop)
    own = model.state_dict()
    dropped = sorted(k for k in state if _matches(k, drop))
    state = {k: v for k, v in state.items() if not _matches(k, drop)}
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in own if k in state and state[k].shape != own[k].shape)
    bad_missing = [k for k in missing if not _matches(k, new)]
    if bad_missing or unexpected or shapes:
        parts = [f"{label} ({len(items)}): {_head(items)}" for label, items in
                 (("missing from the file", bad_missing), ("unexpected in the file", unexpected),
                  ("shape mismatch", shapes)) if items]
        matched = len(own) - len(missing) - len(shapes)
        raise WeightsMismatchError(
            f"weights from {source} do not fit {type(model).__name__}: {'; '.join(parts)}; {matched} of "
            f"{len(own)} model tensors matched. Check that the file is for this model, with the same "
            "num_classes and options (a run's config.yaml says which).")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return LoadReport(source=source, matched=sorted(k for k in own if k in state), new=missing, dropped=dropped)


def _offline_help(what: str, url: str, err: Exception, cache: str) -> RuntimeError:
    return RuntimeError(
        f"could not get {what} ({type(err).__name__}: {err}). If this machine is offline, download {url} "
        f"elsewhere and either put it in {cache} or set model.weights_path=/path/to/that/file "
        "(--set model.weights_path=...); or train from scratch with model.pretrained=false.")


def torchvision_state_dict(weights, weights_path: str | os.PathLike | None = None) -> tuple[dict, str]:
    """ImageNet tensors of a torchvision ``WeightsEnum`` (from ``weights_path`` when given), and their source."""
    if weights_path:
        return read_state_dict(weights_path), str(weights_path)
    try:
        # weights_only: torch.hub's loader defaults to full unpickling, and it loads a file already in its cache
        # without checking the hash, so a tampered cache file would otherwise run code
        return weights.get_state_dict(progress=False, check_hash=True, weights_only=True), weights.url
    except Exception as err:  # noqa: BLE001 - URLError, OSError, hash errors: all mean "no weights"
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        cached = cache / os.path.basename(weights.url)
        if cached.is_file():
            raise RuntimeError(
                f"could not load torchvision's cached ImageNet weights {cached} ({load_error(err)}); the "
                "file is damaged or is not a plain state dict (pickles that need code to load are refused on "
                "purpose). Delete it to download it again, or set model.weights_path to a good copy.") from err
        raise _offline_help(f"torchvision's ImageNet weights {weights}", weights.url, err, f"{cache}/") from err


def timm_state_dict(name: str, weights_path: str | os.PathLike | None = None) -> tuple[dict, str]:
    """ImageNet tensors of the timm model ``name`` (e.g. ``mobilenetv1_100.ra4_e3600_r224_in1k``)."""
    if weights_path:
        return read_state_dict(weights_path), str(weights_path)
    import timm

    try:
        model = timm.create_model(name, pretrained=True)
    except Exception as err:  # noqa: BLE001 - hub and network errors
        cfg = timm.models.get_pretrained_cfg(name)
        hub = getattr(cfg, "hf_hub_id", None) or name
        url = f"https://huggingface.co/{hub} (model.safetensors)"
        raise _offline_help(f"timm's ImageNet weights {name}", url, err, "the Hugging Face cache") from err
    return model.state_dict(), f"timm {name}"


def refuse_pretrained(name: str, pretrained: bool) -> None:
    """A builder's guard for models that have no pretrained weights."""
    if pretrained:
        raise ValueError(f"{name} has no pretrained weights; set model.pretrained=false")


def refuse_weights_path(weights_path: str | None) -> None:
    """A builder's guard: ``weights_path`` without ``pretrained=True`` is a mistake worth naming."""
    if weights_path:
        raise ValueError("model.weights_path is set but model.pretrained is false; set pretrained=true to use it")


# --------------------------------------------------------------------------------------------- backbones
def backbone_location(model: nn.Module) -> tuple[str, tuple[str, ...]]:
    """Where a model's backbone is: ``(prefix, module names)``, the names ``model.cfg.backbone`` declares.

    A wrapper whose backbone is one registered model (SCN, the region nets: ``cfg.backbone == ("backbone",)`` and
    ``model.backbone`` has its own ``cfg``) is looked through: its backbone is that model's backbone under the prefix
    ``backbone.`` (``("backbone.", ("blocks",))`` for SCN on ``small_cnn``).
    """
    prefix = ""
    while True:
        names = tuple(getattr(getattr(model, "cfg", None), "backbone", ()) or ())
        inner = getattr(model, "backbone", None)
        if names != ("backbone",) or not hasattr(inner, "cfg"):
            return prefix, names
        prefix, model = prefix + "backbone.", inner


def backbone_name(model: nn.Module) -> str:
    """The registered name of the model that holds the backbone (``small_cnn`` for SCN on ``small_cnn``)."""
    prefix, _ = backbone_location(model)
    for _ in range(prefix.count("backbone.")):
        model = model.backbone
    return getattr(getattr(model, "cfg", None), "name", type(model).__name__)


def _in_backbone(key: str, prefix: str, names: tuple[str, ...]) -> bool:
    rest = key[len(prefix):] if key.startswith(prefix) else None
    return rest is not None and any(rest == n or rest.startswith(n + ".") for n in names)


def backbone_state(model: nn.Module, state: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The backbone's tensors of ``state`` (default: the model's own), keyed *relative to the backbone's owner*: the
    wrapper prefix of :func:`backbone_location` removed, so ``small_cnn`` and SCN on ``small_cnn`` both give
    ``blocks.0.0.weight``. ``state`` is a state dict of ``model``'s architecture (e.g. its checkpoint)."""
    prefix, names = backbone_location(model)
    state = model.state_dict() if state is None else state
    return {k[len(prefix):]: v for k, v in state.items() if _in_backbone(k, prefix, names)}


def pick_backbone(state: Mapping[str, torch.Tensor], keys: Iterable[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors of a weights file for backbone ``keys`` (relative, as :func:`backbone_state` gives them), where a
    file is only keys: the tensor of key ``k`` is the file's ``k`` or, a wrapper's checkpoint, ``backbone.k``.
    Returns ``(found, the file's keys not used)``; keys found in neither form are left out of ``found``."""
    found, used = {}, set()
    for k in keys:
        for name in (k, f"backbone.{k}"):
            if name in state:
                found[k] = state[name]
                used.add(name)
                break
    return found, sorted(k for k in state if k not in used)


def _shape(value) -> tuple[int, ...]:
    return tuple(value.shape) if hasattr(value, "shape") else tuple(value)


def backbone_mismatch(target: Mapping[str, object], source: Mapping[str, object], *, exact: bool = True) -> str | None:
    """What keeps ``source`` backbone tensors (or shapes) from filling the ``target`` backbone, or None when they fit:
    every target key must be in the source with the same shape; with ``exact``, every source key must also have a
    place in the target (a longer source backbone is another architecture, not something to cut silently)."""
    missing = sorted(k for k in target if k not in source)
    shapes = sorted(f"{k} {_shape(source[k])} in the source vs {_shape(target[k])} here" for k in target
                    if k in source and _shape(source[k]) != _shape(target[k]))
    extra = sorted(k for k in source if k not in target) if exact else []
    parts = [f"{label} ({len(items)}): {_head(items, 6)}" for label, items in
             (("missing from the source", missing), ("shape mismatch", shapes),
              ("in the source's backbone, not in this one", extra)) if items]
    if not parts:
        return None
    matched = len(target) - len(missing) - len(shapes)
    return f"{'; '.join(parts)}; {matched} of {len(target)} backbone tensors fit"


def load_backbone(model: nn.Module, source: Mapping[str, torch.Tensor], *, source_name: str,
                  unused: Iterable[str] = (), exact: bool = True) -> LoadReport:
    """Fill ``model``'s backbone from ``source`` (relative keys, as :func:`backbone_state` gives them) strictly, and
    report it: ``matched`` the model's keys loaded, ``new`` every other model tensor (the head, left as initialised),
    ``dropped`` the source's keys not used (``unused``: e.g. the source's own head, plus with ``exact=False`` any
    source key with no place here).

    Raises:
        WeightsMismatchError: the model declares no backbone, or :func:`backbone_mismatch` finds a problem.
    """
    prefix, names = backbone_location(model)
    if not names:
        raise WeightsMismatchError(f"{getattr(model.cfg, 'name', type(model).__name__)} declares no backbone "
                                   "(ModelConfig.backbone), so no backbone can be loaded into it")
    target = backbone_state(model)
    problem = backbone_mismatch(target, source, exact=exact)
    if problem:
        raise WeightsMismatchError(f"the backbone from {source_name} does not fit {backbone_name(model)}'s "
                                   f"backbone: {problem}")
    result = model.load_state_dict({prefix + k: source[k] for k in target}, strict=False)
    if result.unexpected_keys:  # cannot happen: the keys come from the model itself
        raise WeightsMismatchError(f"unexpected keys {result.unexpected_keys}")
    matched = sorted(prefix + k for k in target)
    taken = set(matched)
    return LoadReport(source=source_name, matched=matched, new=sorted(k for k in model.state_dict() if k not in taken),
                      dropped=sorted({*unused, *(k for k in source if k not in target)}))
