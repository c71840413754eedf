"""Looking at the features themselves (FER Lab's own code): the layers worth looking at (every layer with channel
maps, and the model's stages), activation maps of any layer, a grid of the strongest channels, and a filter
visualisation by gradient ascent on a Fourier-parametrised image (after Olah et al.,
"Feature Visualization", Distill 2017, and the lucid / lucent libraries' ``fft_image`` with colour decorrelation).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fer_core.explain.core import Inputs, _model_lock, frozen_eval, model_device, prepare, register_method
from fer_core.models import get_target_layer

# lucid's square root of the ImageNet colour correlation matrix (rows: R, G, B), scaled to a max column norm of 1
_COLOR = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32)
_COLOR = _COLOR / np.linalg.norm(_COLOR, axis=0).max()


class _Stop(Exception):
    """Raised by the capture hook to end the forward pass at the layer (nothing after it is needed)."""


def capture(model: nn.Module, layer: str | None, x: torch.Tensor) -> torch.Tensor:
    """The output of the module at dotted path ``layer`` (None: the CAM layer) for input ``x``; the forward pass
    stops there and the hook is removed whatever happens."""
    module = get_target_layer(model, layer)
    out: list[torch.Tensor] = []

    def hook(_module: nn.Module, _args: Any, output: Any) -> None:
        out.append(output[0] if isinstance(output, tuple | list) else output)
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not out:
        raise ValueError(f"layer {layer or model.cfg.target_layer!r} did not run in {type(model).__name__}'s forward "
                         "pass; choose a module that forward uses")
    return out[0]


def _spatial(act: torch.Tensor, layer: str) -> torch.Tensor:
    if act.ndim != 4:
        raise ValueError(f"layer {layer!r} gives {tuple(act.shape)} outputs, not channel maps (B x C x H x W); "
                         "choose a convolutional layer")
    return act


@register_method("activations", family="activation", library="fer_core", per_class=False, defaults=dict(layer=None),
                 description="mean activation over the channels of a layer (class-agnostic)")
def activations(inputs: Inputs, targets: list[int], *, layer: str | None) -> tuple[np.ndarray, dict[str, Any]]:
    """The mean over channels of the layer's output (default: the CAM layer), min-max normalised."""
    name = layer or inputs.model.cfg.target_layer
    with torch.no_grad():
        act = _spatial(capture(inputs.model, name, inputs.x), name)
    m = act[0].float().mean(0).cpu().numpy()
    return np.repeat(m[None], len(targets), axis=0), dict(layer=name, channels=int(act.shape[1]),
                                                           resolution=tuple(act.shape[-2:]))


def activation_grid(model: nn.Module, image: np.ndarray, layer: str | None = None, k: int = 16, *, tile: int = 64,
                    colormap: str = "viridis") -> np.ndarray:
    """A uint8 RGB grid of the ``k`` channels of ``layer`` (default: the CAM layer) with the highest mean
    activation for ``image``, strongest first (row by row), each min-max normalised, enlarged to ``tile`` pixels
    without smoothing (so a 4x4 map looks 4x4), coloured with an OpenCV colormap, 2 px white gaps."""
    from fer_core.explain.render import colormap_code

    if k < 1 or tile < 1:
        raise ValueError(f"activation_grid needs k >= 1 and tile >= 1 (got k={k}, tile={tile})")
    name = layer or model.cfg.target_layer
    _, _, x = prepare(model, image)
    with frozen_eval(model), torch.no_grad():
        act = _spatial(capture(model, name, x), name)[0].float().cpu()
    k = min(k, act.shape[0])
    top = act.flatten(1).mean(1).topk(k).indices
    cols = math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)
    gap = 2
    grid = np.full((rows * tile + (rows - 1) * gap, cols * tile + (cols - 1) * gap, 3), 255, np.uint8)
    code = colormap_code(colormap)
    for i, ch in enumerate(top.tolist()):
        m = act[ch].numpy()
        lo, hi = float(m.min()), float(m.max())
        m = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
        m = cv2.resize((m * 255).round().astype(np.uint8), (tile, tile), interpolation=cv2.INTER_NEAREST)
        r, c = divmod(i, cols)
        y, x0 = r * (tile + gap), c * (tile + gap)
        grid[y:y + tile, x0:x0 + tile] = cv2.cvtColor(cv2.applyColorMap(m, code), cv2.COLOR_BGR2RGB)
    return grid


def visualize_filter(model: nn.Module, layer: str | None, channel: int, *, size: int | tuple[int, int] | None = None,
                     steps: int = 128, lr: float = 0.05, seed: int = 0) -> np.ndarray:
    """An image that excites one channel: :func:`visualize_filters` for one channel (see there for the method)."""
    return visualize_filters(model, layer, [channel], size=size, steps=steps, lr=lr, seed=seed)[0]


def visualize_filters(model: nn.Module, layer: str | None, channels: Sequence[int], *,
                      size: int | tuple[int, int] | None = None, steps: int = 128, lr: float = 0.05,
                      seed: int = 0) -> list[np.ndarray]:
    """Images that excite channels of one layer, one per channel: gradient ascent on each channel's mean activation,
    all channels in one batch (one forward and backward pass per step for the whole batch).

    Each image is parametrised in the Fourier domain with a 1/frequency amplitude scale (so all frequencies learn at
    a similar rate and the result is not high-frequency noise), decorrelated colours for RGB models (lucid's
    matrix), and a sigmoid to [0, 1]; it is optimised with Adam, and each step sees it randomly shifted (about 4 %
    of its side), scaled (0.9-1.1) and rotated (+-10 degrees), which makes the pattern robust rather than
    adversarial. The model's own normalisation is applied before the forward pass, which stops at the layer.

    **One channel's image does not depend on the other channels asked for.** Every image starts from the same
    seeded noise and sees the same random transform at each step (both drawn from ``seed`` alone, as for a single
    channel); the loss is the *sum* of the images' objectives, so each image gets exactly its own gradient, and Adam
    updates every element on its own. ``visualize_filters(m, l, [a, b])[1]`` is therefore
    ``visualize_filter(m, l, b)`` up to floating-point rounding: batched convolutions may sum in another order
    (about 1e-7 relative), which 32 Adam steps can amplify to a few grey levels of the uint8 image where a gradient
    is close to zero, as much as running the same call on another number of threads does (in float64 the images are
    equal; ``tests/test_explain.py`` checks both). This holds for models whose samples do not interact in
    evaluation mode, i.e. every model here except ``patt_lite`` at or after its batch attention (whose outputs
    depend on the batch by design: visualise its channels one call per channel).

    Args:
        model: a model with ``.cfg``; grey (1-channel) or RGB; only read: the images are optimised against a private
            frozen copy (see :func:`_frozen_copy`), so the model is left as it was and other explanations of it need
            not wait.
        layer: dotted module path (None: the CAM layer); a ``B x C x H x W`` output is averaged over space, a
            ``B x C`` output (a linear layer: logits) is used as is, so ``layer="fc"`` visualises a class.
        channels: the channels (or units) to maximise, one image each, in this order (repeats allowed).
        size: the images' size, int or (height, width) (default: the model's input size).
        steps: optimisation steps.
        lr: Adam's learning rate.
        seed: seeds the initial spectrum and the random transforms (a private generator; global RNG untouched).

    Returns:
        one uint8 ``H x W x 3`` (RGB models) or ``H x W`` (grey models) image per channel.
    """
    channels = [int(ch) for ch in channels]
    if not channels:
        return []
    # gradients are needed even when the caller is inside torch.no_grad() or torch.inference_mode()
    with torch.inference_mode(False), torch.enable_grad():
        work = _frozen_copy(model)
        if work is None:  # a model that cannot be copied: optimise against it, held as every explanation holds it
            with frozen_eval(model):
                imgs = _ascend(model, layer, channels, size, steps, lr, seed)
        else:
            imgs = _ascend(work, layer, channels, size, steps, lr, seed)
    out = (imgs * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [img[:, :, 0] if imgs.shape[1] == 1 else img for img in out]


class _FrozenBatchNorm2d(nn.Module):
    """An eval-mode ``BatchNorm2d`` as the per-channel affine map it then is, ``x * scale + shift``: the same output
    (up to rounding) with a cheaper backward pass."""

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        scale = bn.running_var.add(bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale + (bn.bias if bn.bias is not None else 0)
        self.register_buffer("scale", scale.detach().view(1, -1, 1, 1).clone())
        self.register_buffer("shift", shift.detach().view(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x, self.scale)


def _frozen_copy(model: nn.Module) -> nn.Module | None:
    """A private copy of ``model`` to optimise images against: eval mode, parameters without gradients, every plain
    ``BatchNorm2d`` with running statistics as its affine map (:class:`_FrozenBatchNorm2d`), weights channels-last.
    On this 2-core CPU the last two make the mini-Xception's ascent at the Filters page's defaults about 1.6x faster.
    Copied under the model's explanation lock, so no other explanation's hooks come along and the model itself is
    only read; the ascent then runs without holding the lock. None when the model cannot be deep-copied."""
    with _model_lock(model):
        try:
            work = copy.deepcopy(model)
        except Exception:  # noqa: BLE001 - e.g. a module holding a lock or an open file: the caller uses the model
            return None
    for p in work.parameters():
        p.requires_grad_(False)
        p.grad = None
    for module in list(work.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.BatchNorm2d and child.track_running_stats and child.running_var is not None:
                setattr(module, name, _FrozenBatchNorm2d(child))
    return work.eval().to(memory_format=torch.channels_last)


def _ascend(model: nn.Module, layer: str | None, channels: list[int], size: int | tuple[int, int] | None,
            steps: int, lr: float, seed: int) -> torch.Tensor:
    """The optimised images, ``B x C x H x W`` in [0, 1], one per channel (see :func:`visualize_filters`)."""
    c, h, w = model.cfg.input_size
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    name = layer or model.cfg.target_layer
    device = model_device(model)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    n = len(channels)
    gen = torch.Generator().manual_seed(seed)
    freqs = torch.sqrt(torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.rfftfreq(w)[None, :] ** 2)
    scale = (1.0 / freqs.clamp_min(1.0 / max(h, w)))[None, None, :, :, None].to(device, dtype)
    # the same seeded start for every image (what a single-channel call draws), so no image depends on the others
    start = torch.randn(c, h, w // 2 + 1, 2, generator=gen) * 0.01
    spectrum = start.expand(n, *start.shape).to(device, dtype).clone().requires_grad_(True)
    color = torch.from_numpy(_COLOR).to(device, dtype)
    mean = torch.tensor(model.cfg.mean, device=device, dtype=dtype).view(1, -1, 1, 1)
    std = torch.tensor(model.cfg.std, device=device, dtype=dtype).view(1, -1, 1, 1)
    jitter = max(1, round(0.04 * max(h, w)))
    rows = torch.arange(n, device=device)
    index = torch.tensor(channels, device=device)

    def render() -> torch.Tensor:  # n x c x h x w in [0, 1]
        img = torch.fft.irfft2(torch.view_as_complex(scale * spectrum), s=(h, w), norm="ortho") / 4.0
        if c == 3:
            img = torch.einsum("ij,bjhw->bihw", color, img)
        return torch.sigmoid(img)

    def robust(img: torch.Tensor) -> torch.Tensor:  # one random transform, the same for every image
        u = torch.rand(4, generator=gen)
        angle = math.radians((float(u[0]) * 2 - 1) * 10)
        s = 0.9 + 0.2 * float(u[1])
        tx, ty = ((u[2:] * 2 - 1) * jitter).round() * 2 / torch.tensor([w, h])
        theta = torch.tensor([[s * math.cos(angle), -s * math.sin(angle), float(tx)],
                              [s * math.sin(angle), s * math.cos(angle), float(ty)]], device=device, dtype=dtype)
        grid = F.affine_grid(theta[None], [1, c, h, w], align_corners=False).expand(n, -1, -1, -1)
        return F.grid_sample(img, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    optimiser = torch.optim.Adam([spectrum], lr=lr)
    for step in range(int(steps)):
        act = capture(model, name, ((robust(render()) - mean) / std).contiguous(memory_format=torch.channels_last))
        if step == 0:
            if act.ndim not in (2, 4):
                raise ValueError(f"layer {name!r} gives {tuple(act.shape)} outputs; need B x C or B x C x H x W")
            bad = [ch for ch in channels if not 0 <= ch < act.shape[1]]
            if bad:
                raise ValueError(f"channel {bad[0]} is out of range: layer {name!r} has {act.shape[1]} channels "
                                 f"(0 to {act.shape[1] - 1})")
        # the sum, not the mean, of the objectives: each image gets the gradient it would get alone
        loss = -act[rows, index].reshape(n, -1).mean(1).sum()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return render()


# --------------------------------------------------------------------------------------------- layers
@dataclass(frozen=True)
class LayerInfo:
    """A layer whose output is a stack of channel maps.

    Attributes:
        name: dotted module path (``model.get_submodule(name)``; the ``layer`` argument of ``fer_core.explain``).
        channels: channels of its output.
        height: height of its output maps for the model's input size.
        width: width of its output maps.
        depth: how deep the module sits (1 for the model's own children).
    """

    name: str
    channels: int
    height: int
    width: int
    depth: int

    @property
    def label(self) -> str:
        """E.g. ``stages.1 (32 channels, 15x15)``."""
        return f"{self.name} ({self.channels} channels, {self.height}x{self.width})"


def feature_layers(model: nn.Module) -> list[LayerInfo]:
    """Every module of the model whose output is a ``B x C x H x W`` map with more than one pixel, in the order the
    forward pass starts them (a container before its children), found by one forward pass on a blank input of the
    model's input size (``model.cfg.input_size``). A module that runs several times is listed once (its first call).
    The model is left as it was (mode, gradients, no hooks)."""
    started: list[str] = []
    shapes: dict[str, tuple[int, ...]] = {}
    names = {m: n for n, m in model.named_modules() if n}
    handles = []

    def before(module: nn.Module, _args: Any) -> None:
        name = names[module]
        if name not in shapes and name not in started:
            started.append(name)

    def after(module: nn.Module, _args: Any, output: Any) -> None:
        out = output[0] if isinstance(output, tuple | list) and output else output
        name = names[module]
        if name not in shapes:
            shapes[name] = tuple(out.shape) if isinstance(out, torch.Tensor) else ()

    for module in names:
        handles.append(module.register_forward_pre_hook(before))
        handles.append(module.register_forward_hook(after))
    try:
        with frozen_eval(model), torch.no_grad():
            model(torch.zeros(1, *model.cfg.input_size, device=model_device(model)))
    finally:
        for h in handles:
            h.remove()
    return [LayerInfo(name, s[1], s[2], s[3], name.count(".") + 1) for name in started
            if len(s := shapes.get(name, ())) == 4 and s[2] * s[3] > 1]


def stage_layers(model: nn.Module) -> list[LayerInfo]:
    """The model's stages, for looking at its features stage by stage (e.g. ``layer1``-``layer4`` of a ResNet).

    From the backbone modules the model declares (``model.cfg.backbone``; all its children if it declares none), in
    forward order: a container whose children change the resolution at least twice (a ``stages`` or ``features``
    sequence) stands for its children; then of consecutive layers with the same output shape only the last is kept
    (``conv1``, ``bn1`` -> ``bn1``).
    """
    layers = feature_layers(model)
    by_name = {layer.name: layer for layer in layers}
    tops = list(getattr(model.cfg, "backbone", ()) or [n for n, _ in model.named_children()])
    picked: list[LayerInfo] = []
    for top in tops:
        children = [layer for layer in layers if layer.name.startswith(top + ".") and layer.depth == 2]
        if len({(c.height, c.width) for c in children}) >= 3:
            picked += children
        elif top in by_name:
            picked.append(by_name[top])
    picked.sort(key=layers.index)
    stages: list[LayerInfo] = []
    for layer in picked:
        if stages and (stages[-1].channels, stages[-1].height, stages[-1].width) == (layer.channels, layer.height,
                                                                                  layer.width):
            stages[-1] = layer
        else:
            stages.append(layer)
    return stages
