"""The one entry point (:func:`explain`), its result (:class:`Explanation`) and the method registry.

A method is a function ``fn(inputs, targets, **options) -> (maps, settings)``: ``inputs`` is an :class:`Inputs`
(the model, the caller's image, the normalised model input), ``targets`` a list of class indices, and it returns
one float map per target (``T x h x w``, any size, any scale) and the options it actually used. :func:`explain`
does everything around it: checks, preprocessing with the model's own :class:`~fer_core.transforms.BatchTransform`,
the prediction, eval mode and frozen parameters for the duration of the call, resizing every map to the caller's
image and normalising it.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from fer_core.transforms import BatchTransform

MethodFn = Callable[..., tuple[np.ndarray, dict[str, Any]]]


@dataclass(frozen=True)
class MethodInfo:
    """What :func:`method_info` says about a registered method.

    Attributes:
        name: registry name, the ``method`` argument of :func:`explain`.
        family: "gradient", "cam", "perturbation" or "activation".
        library: the library that computes it ("captum", "pytorch-grad-cam", "lime", "fer_core").
        per_class: whether the map depends on the target class (EigenCAM and activations do not).
        all_classes: whether ``target="all"`` is supported (one cheap pass gives every class's map).
        signed: maps are in [-1, 1] (positive = evidence for the target class) instead of [0, 1].
        defaults: the default options.
        description: one line for menus.
    """

    name: str
    fn: MethodFn = field(repr=False)
    family: str
    library: str
    per_class: bool
    all_classes: bool
    signed: bool
    defaults: MappingProxyType
    description: str = ""


_METHODS: dict[str, MethodInfo] = {}


def register_method(name: str, fn: MethodFn | None = None, *, family: str, library: str, per_class: bool = True,
                    all_classes: bool = False, signed: bool = False, defaults: dict[str, Any] | None = None,
                    description: str = "") -> Any:
    """Register an explanation method under ``name`` (as a decorator, or directly with ``fn``).

    ``fn(inputs, targets, **options)`` receives an :class:`Inputs`, a list of class indices and every option of
    ``defaults`` (overridden by the caller's), and returns ``(maps, settings)``: float ``len(targets) x h x w``
    maps and the options it used (with any derived values, e.g. a window size in pixels).

    Raises:
        ValueError: the name is already registered.
    """
    def decorator(func: MethodFn) -> MethodFn:
        if name in _METHODS:
            raise ValueError(f"explanation method {name!r} is already registered (by {_METHODS[name].fn.__module__})")
        _METHODS[name] = MethodInfo(name=name, fn=func, family=family, library=library, per_class=per_class,
                                    all_classes=all_classes, signed=signed,
                                    defaults=MappingProxyType(dict(defaults or {})), description=description)
        return func

    return decorator(fn) if fn is not None else decorator


_FAMILIES = ("gradient", "cam", "perturbation", "activation")


def list_methods() -> list[str]:
    """Registered method names: gradients, CAMs, perturbations, activations, then other families; each in
    registration order."""
    rank = {f: i for i, f in enumerate(_FAMILIES)}
    return sorted(_METHODS, key=lambda n: rank.get(_METHODS[n].family, len(rank)))


def method_info(name: str) -> MethodInfo:
    """The :class:`MethodInfo` of a registered method.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"unknown explanation method {name!r}; valid: {', '.join(list_methods())}") from None


@dataclass
class Explanation:
    """One explanation of one prediction.

    Attributes:
        map: float32 ``H x W`` at the size of the image given to :func:`explain` (``C x H x W`` for
            ``target="all"``, one map per class), finite; in [0, 1], except for the signed methods
            (``method_info(m).signed``: integrated gradients, occlusion, LIME), which are in [-1, 1] with
            positive values for evidence *for* the target class. Each map is normalised on its own (min-max,
            or by the largest absolute value when signed); a constant map is all zeros.
        target: the explained class (with ``target="all"``: the predicted class; ``map[k]`` explains class k).
        class_name: its name.
        probs: softmax of the model's logits for the image (float64, sums to 1).
        method: the method's registry name.
        settings: the options used, with derived values (layer, window in pixels, ...) and ``target``.
        seconds: wall time of the whole call.
        class_names: the model's class names (``probs[k]`` and, for ``target="all"``, ``map[k]`` are class k's).
    """

    map: np.ndarray = field(repr=False)
    target: int
    class_name: str
    probs: np.ndarray
    method: str
    settings: dict[str, Any]
    seconds: float
    class_names: tuple[str, ...] = ()

    @property
    def predicted(self) -> int:
        """The predicted class (argmax of ``probs``)."""
        return int(np.argmax(self.probs))


@dataclass
class Inputs:
    """What a method function receives about the image and the model.

    Attributes:
        model: the model, in eval mode with frozen parameters for the duration of the call.
        image: the caller's uint8 image (``H x W`` or ``H x W x 3``).
        batch: the same as a uint8 ``1 x C x H x W`` CPU tensor.
        transform: the model's evaluation :class:`BatchTransform` (uint8 batch -> normalised input).
        x: the normalised model input, ``1 x C x h x w`` on the model's device, no grad.
        logits: the model's ``1 x num_classes`` output for ``x``.
    """

    model: nn.Module
    image: np.ndarray
    batch: torch.Tensor
    transform: BatchTransform
    x: torch.Tensor
    logits: torch.Tensor

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(channels, height, width) of the model's input."""
        return tuple(self.model.cfg.input_size)

    def repeat(self, n: int) -> torch.Tensor:
        """``n`` copies of the input, as a fresh leaf tensor that requires grad (the parameters do not)."""
        return self.x.detach().expand(n, -1, -1, -1).clone().requires_grad_(True)


# --------------------------------------------------------------------------------------------- helpers
def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer; CPU if it has neither)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def image_to_batch(image: np.ndarray) -> torch.Tensor:
    """A uint8 ``H x W``, ``H x W x 1`` or ``H x W x 3`` (RGB) image as a uint8 ``1 x C x H x W`` tensor.

    Raises:
        TypeError / ValueError: not a uint8 numpy image of one of those shapes (the message says what to do).
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy uint8 array (H x W or H x W x 3 RGB), not {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"image must be uint8 (0-255), got {image.dtype}; for a float image in [0, 1] pass "
                        "(image * 255).round().astype(np.uint8)")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3) or min(image.shape[:2]) < 1:
        raise ValueError(f"image must be H x W (grey) or H x W x 3 (RGB), got shape {image.shape}; "
                         "drop an alpha channel with image[..., :3]")
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0)


_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _model_lock(model: nn.Module) -> threading.RLock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


@contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Hold the model for one explanation: a per-model lock (hooks of two requests never mix on a model an app
    caches and shares), eval mode, parameters that do not require grad; on exit every module's train/eval mode,
    every parameter's ``requires_grad`` and ``.grad`` are put back as they were, even after an exception."""
    with _model_lock(model):
        modes = [(m, m.training) for m in model.modules()]
        params = list(model.parameters())
        saved = [(p, p.requires_grad, p.grad) for p in params]
        try:
            model.eval()
            for p in params:
                p.requires_grad_(False)
            yield model
        finally:
            for m, training in modes:
                m.training = training
            for p, requires_grad, grad in saved:
                p.requires_grad_(requires_grad)
                p.grad = grad


def prepare(model: nn.Module, image: np.ndarray) -> tuple[torch.Tensor, BatchTransform, torch.Tensor]:
    """``(uint8 batch, the model's evaluation transform, normalised input)`` for one image."""
    if not hasattr(model, "cfg"):
        raise ValueError(f"{type(model).__name__} has no .cfg (input size, mean, std): build it with "
                         "fer_core.models.create_model")
    batch = image_to_batch(image)
    transform = BatchTransform(model.cfg, device=model_device(model))
    return batch, transform, transform(batch)


def resolve_targets(target: Any, num_classes: int, class_names: tuple[str, ...], predicted: int,
                    info: MethodInfo) -> list[int]:
    """The class indices to explain for a ``target`` argument of :func:`explain`."""
    if target is None:
        return [predicted]
    if isinstance(target, str):
        if target == "all":
            if not info.all_classes:
                able = [n for n in list_methods() if _METHODS[n].all_classes]
                why = ("its map does not depend on the class" if not info.per_class
                       else "it would cost one full run per class")
                raise ValueError(f"{info.name} does not support target='all' ({why}); methods that do: "
                                 f"{', '.join(able)}")
            return list(range(num_classes))
        if target in class_names:
            return [class_names.index(target)]
        raise ValueError(f"unknown target class {target!r}; valid: None, 'all', an index or one of {list(class_names)}")
    if isinstance(target, bool) or not isinstance(target, int | np.integer):
        raise TypeError(f"target must be None, 'all', a class index or a class name, not {target!r}")
    if not 0 <= int(target) < num_classes:
        raise ValueError(f"target {int(target)} is out of range for {num_classes} classes {list(class_names)}")
    return [int(target)]


def finish_maps(maps: np.ndarray, size: tuple[int, int], signed: bool) -> np.ndarray:
    """float32 ``T x H x W`` maps at ``size`` (H, W), finite, each normalised: to [0, 1] by min-max, or to
    [-1, 1] by its largest absolute value when ``signed``; a constant map becomes zeros."""
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if maps.ndim == 2:
        maps = maps[None]
    h, w = size
    out = np.empty((len(maps), h, w), np.float32)
    for i, m in enumerate(maps):
        if m.shape != (h, w):
            m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
        if signed:
            scale = float(np.abs(m).max())
            out[i] = m / scale if scale > 0 else 0.0
        else:
            lo, hi = float(m.min()), float(m.max())
            out[i] = (m - lo) / (hi - lo) if hi > lo else 0.0
    return np.clip(out, -1.0 if signed else 0.0, 1.0)


_QUIET_LOCK = threading.Lock()
_QUIET_COUNT: dict[tuple[int, str], int] = {}
_QUIET_SAVED: dict[tuple[int, str], Any] = {}


@contextmanager
def silenced(module: Any, attr: str, replacement: Any) -> Iterator[None]:
    """Replace ``module.attr`` (a library's progress-bar name) by ``replacement`` while any caller is inside;
    reference-counted, so concurrent explanations neither serialise nor restore it under each other."""
    key = (id(module), attr)
    with _QUIET_LOCK:
        if _QUIET_COUNT.get(key, 0) == 0:
            _QUIET_SAVED[key] = getattr(module, attr)
            setattr(module, attr, replacement)
        _QUIET_COUNT[key] = _QUIET_COUNT.get(key, 0) + 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _QUIET_COUNT[key] -= 1
            if _QUIET_COUNT[key] == 0:
                setattr(module, attr, _QUIET_SAVED.pop(key))


def no_bar(iterable: Any = None, *args: Any, **kwargs: Any) -> Any:
    """A stand-in for ``tqdm(iterable, ...)`` that shows nothing."""
    return iterable


# --------------------------------------------------------------------------------------------- the entry point
def explain(model: nn.Module, image: np.ndarray, method: str, target: int | str | None = None,
            **options: Any) -> Explanation:
    """Explain the model's prediction for one face crop with a registered method.

    Args:
        model: a model from :func:`fer_core.models.create_model` (it has ``.cfg``); it is put in eval mode with
            frozen parameters for the call and left exactly as it was (mode, ``requires_grad``, ``.grad``, no
            hooks), even when the call raises.
        image: uint8 face crop, ``H x W`` (grey) or ``H x W x 3`` (RGB), any size; converted to the model's input
            by its evaluation :class:`~fer_core.transforms.BatchTransform` (resize, grey/RGB, normalise).
        method: a name from :func:`list_methods`.
        target: None (the predicted class), a class index or name, or "all" (every class's map stacked
            ``C x H x W``, for methods with ``method_info(m).all_classes``).
        **options: the method's options (``method_info(m).defaults`` lists them with their defaults).

    Returns:
        An :class:`Explanation`, its map at the image's own size.

    Raises:
        ValueError: unknown method, option, target or layer; TypeError: an image that is not uint8 numpy.
    """
    start = time.perf_counter()
    info = method_info(method)
    unknown = sorted(set(options) - set(info.defaults))
    if unknown:
        raise ValueError(f"{method} has no option {', '.join(map(repr, unknown))}; valid: "
                         f"{', '.join(f'{k}={v!r}' for k, v in info.defaults.items()) or 'none'}")
    opts = {**info.defaults, **options}
    # gradients are needed even when the caller is inside torch.no_grad() or torch.inference_mode()
    with torch.inference_mode(False), torch.enable_grad(), frozen_eval(model):
        batch, transform, x = prepare(model, image)
        with torch.no_grad():
            logits = model(x)
        probs = torch.softmax(logits.detach().double(), dim=1)[0].cpu().numpy()
        names = tuple(model.cfg.class_names)
        predicted = int(np.argmax(probs))
        targets = resolve_targets(target, logits.shape[1], names, predicted, info)
        inputs = Inputs(model=model, image=image, batch=batch, transform=transform, x=x, logits=logits)
        maps, settings = info.fn(inputs, targets, **opts)
    maps = finish_maps(maps, image.shape[:2], info.signed)
    if len(maps) != len(targets):
        raise RuntimeError(f"{method} returned {len(maps)} maps for {len(targets)} targets")
    shown = predicted if target == "all" else targets[0]
    settings = dict(settings, target="all" if target == "all" else shown)
    return Explanation(map=maps if target == "all" else maps[0], target=shown, class_name=names[shown], probs=probs,
                       method=method, settings=settings, seconds=time.perf_counter() - start, class_names=names)
