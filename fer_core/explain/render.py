"""Drawing explanations: one overlay for every method, and a contact-sheet row of them."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from fer_core.explain.core import Explanation

_COLORMAPS = {name[len("COLORMAP_"):].lower(): getattr(cv2, name) for name in dir(cv2) if name.startswith("COLORMAP_")}


def colormap_code(name: str) -> int:
    """OpenCV's code for a colormap name ("jet", "viridis", "turbo", "inferno", ...)."""
    try:
        return _COLORMAPS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown colormap {name!r}; valid: {', '.join(sorted(_COLORMAPS))}") from None


def to_rgb(image: np.ndarray) -> np.ndarray:
    """A uint8 ``H x W``, ``H x W x 1`` or ``H x W x 3`` image as uint8 ``H x W x 3``."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"image must be H x W or H x W x 3, got shape {image.shape}")
    return np.ascontiguousarray(np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image)


def overlay(image: np.ndarray, map: np.ndarray, *, alpha: float = 0.45, colormap: str = "jet",
            signed: bool = False) -> np.ndarray:
    """The map as a heat map over the image: uint8 RGB at the image's size.

    Every method is drawn the same way: the map (any size; resized to the image, bilinear) is clipped to [0, 1],
    coloured with an OpenCV colormap and blended as ``(1 - alpha) * image + alpha * heat``. For the signed methods
    (integrated gradients, occlusion, LIME) that shows the evidence *for* the class; ``signed=True`` draws the
    whole [-1, 1] range instead (-1 at the colormap's start, 0 in its middle, +1 at its end).

    Args:
        image: uint8 ``H x W`` or ``H x W x 3`` (RGB).
        map: float ``h x w`` (an :class:`Explanation`'s ``map``, or one class of a ``target="all"`` stack).
        alpha: weight of the heat map.
        colormap: an OpenCV colormap name.
        signed: draw negative values too.
    """
    rgb = to_rgb(image)
    m = np.nan_to_num(np.asarray(map, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if m.ndim != 2:
        raise ValueError(f"map must be h x w, got shape {m.shape}; for a target='all' stack pass map[class_index]")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    h, w = rgb.shape[:2]
    if m.shape != (h, w):
        m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
    m = (np.clip(m, -1, 1) + 1) / 2 if signed else np.clip(m, 0, 1)
    heat = cv2.cvtColor(cv2.applyColorMap((m * 255).round().astype(np.uint8), colormap_code(colormap)),
                        cv2.COLOR_BGR2RGB)
    return ((1 - alpha) * rgb.astype(np.float32) + alpha * heat.astype(np.float32)).round().astype(np.uint8)


def _caption(width: int, text: str, height: int = 20) -> np.ndarray:
    strip = np.full((height, width, 3), 255, np.uint8)
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1
    while scale > 0.25 and cv2.getTextSize(text, font, scale, thick)[0][0] > width - 4:
        scale -= 0.025
    (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
    cv2.putText(strip, text, (max(2, (width - tw) // 2), (height + th) // 2), font, scale, (0, 0, 0), thick,
                cv2.LINE_AA)
    return strip


def panel(image: np.ndarray, explanations: Sequence[Explanation], *, size: int = 128, alpha: float = 0.45,
          colormap: str = "jet", gap: int = 4) -> np.ndarray:
    """A contact-sheet row: the image (captioned with the prediction) then one overlay per explanation (captioned
    with its method, and its class when that is not the predicted one), each ``size`` pixels square.

    Returns:
        uint8 RGB ``(20 + size) x W x 3``.
    """
    if not explanations:
        raise ValueError("panel needs at least one explanation")
    face = cv2.resize(to_rgb(image), (size, size), interpolation=cv2.INTER_AREA)
    first = explanations[0]
    pred = first.predicted
    name = first.class_names[pred] if first.class_names else f"class {pred}"
    tiles = [np.vstack([_caption(size, f"{name} {first.probs[pred]:.0%}"), face])]
    for e in explanations:
        m = e.map[e.target] if e.map.ndim == 3 else e.map
        text = e.method if e.target == e.predicted else f"{e.method} ({e.class_name})"
        tiles.append(np.vstack([_caption(size, text), overlay(face, m, alpha=alpha, colormap=colormap)]))
    spacer = np.full((tiles[0].shape[0], gap, 3), 255, np.uint8)
    row = [tiles[0]]
    for t in tiles[1:]:
        row += [spacer, t]
    return np.hstack(row)
