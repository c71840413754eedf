"""Looking at the features themselves (FER Lab's own code): the layers worth looking at (every layer with channel
maps, and the model's stages), activation maps of any layer, a grid of the strongest channels, and a filter
visualisation by gradient ascent on a Fourier-parametrised image (after Olah et al.,
"Feature Visualization", Distill 2017, and the lucid / lucent libraries' ``fft_image`` with colour decorrelation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fer_core.explain.core import Inputs, frozen_eval, model_device, prepare, register_method
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
    """An image that excites one channel: gradient ascent on its mean activation.

    The image is parametrised in the Fourier domain with a 1/frequency amplitude scale (so all frequencies learn at
    a similar rate and the result is not high-frequency noise), decorrelated colours for RGB models (lucid's
    matrix), and a sigmoid to [0, 1]; it is optimised with Adam, and each step sees it randomly shifted (about 4 %
    of its side), scaled (0.9-1.1) and rotated (+-10 degrees), which makes the pattern robust rather than
    adversarial. The model's own normalisation is applied before the forward pass, which stops at the layer.

    Args:
        model: a model with ``.cfg``; grey (1-channel) or RGB; left as it was (mode, parameters, no hooks).
        layer: dotted module path (None: the CAM layer); a ``B x C x H x W`` output is averaged over space, a
            ``B x C`` output (a linear layer: logits) is used as is, so ``layer="fc"`` visualises a class.
        channel: the channel (or unit) to maximise.
        size: the image's size, int or (height, width) (default: the model's input size).
        steps: optimisation steps.
        lr: Adam's learning rate.
        seed: seeds the initial spectrum and the random transforms (a private generator; global RNG untouched).

    Returns:
        uint8 ``H x W x 3`` (RGB models) or ``H x W`` (grey models).
    """
    # gradients are needed even when the caller is inside torch.no_grad() or torch.inference_mode()
    with torch.inference_mode(False), torch.enable_grad(), frozen_eval(model):
        img = _ascend(model, layer, channel, size, steps, lr, seed)
    out = (img * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return out[:, :, 0] if img.shape[0] == 1 else out


def _ascend(model: nn.Module, layer: str | None, channel: int, size: int | tuple[int, int] | None, steps: int,
            lr: float, seed: int) -> torch.Tensor:
    """The optimised image, ``C x H x W`` in [0, 1] (see :func:`visualize_filter`)."""
    c, h, w = model.cfg.input_size
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    name = layer or model.cfg.target_layer
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    freqs = torch.sqrt(torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.rfftfreq(w)[None, :] ** 2)
    scale = (1.0 / freqs.clamp_min(1.0 / max(h, w)))[None, :, :, None].to(device)
    spectrum = (torch.randn(c, h, w // 2 + 1, 2, generator=gen) * 0.01).to(device).requires_grad_(True)
    color = torch.from_numpy(_COLOR).to(device)
    mean = torch.tensor(model.cfg.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(model.cfg.std, device=device).view(1, -1, 1, 1)
    jitter = max(1, round(0.04 * max(h, w)))

    def render() -> torch.Tensor:  # 1 x c x h x w in [0, 1]
        img = torch.fft.irfft2(torch.view_as_complex(scale * spectrum), s=(h, w), norm="ortho") / 4.0
        if c == 3:
            img = torch.einsum("ij,jhw->ihw", color, img)
        return torch.sigmoid(img).unsqueeze(0)

    def robust(img: torch.Tensor) -> torch.Tensor:
        u = torch.rand(4, generator=gen)
        angle = math.radians((float(u[0]) * 2 - 1) * 10)
        s = 0.9 + 0.2 * float(u[1])
        tx, ty = ((u[2:] * 2 - 1) * jitter).round() * 2 / torch.tensor([w, h])
        theta = torch.tensor([[s * math.cos(angle), -s * math.sin(angle), float(tx)],
                              [s * math.sin(angle), s * math.cos(angle), float(ty)]], device=device)
        grid = F.affine_grid(theta[None], [1, c, h, w], align_corners=False)
        return F.grid_sample(img, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    optimiser = torch.optim.Adam([spectrum], lr=lr)
    for _ in range(int(steps)):
        act = capture(model, name, (robust(render()) - mean) / std)
        if act.ndim not in (2, 4):
            raise ValueError(f"layer {name!r} gives {tuple(act.shape)} outputs; need B x C or B x C x H x W")
        if not 0 <= channel < act.shape[1]:
            raise ValueError(f"channel {channel} is out of range: layer {name!r} has {act.shape[1]} channels")
        loss = -(act[0, channel].mean())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return render()[0]


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
