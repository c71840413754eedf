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


def enlarge(image: np.ndarray, size: int) -> np.ndarray:
    """A uint8 image (grey or RGB) resized to ``size`` x ``size`` RGB for display: bicubic when enlarging, area
    averaging when shrinking (a square face crop keeps its shape)."""
    rgb = to_rgb(image)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if rgb.shape[:2] == (size, size):
        return rgb
    grow = size > max(rgb.shape[:2])
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_CUBIC if grow else cv2.INTER_AREA)


def overlay_tile(image: np.ndarray, map: np.ndarray, *, size: int = 224, mask: np.ndarray | None = None,
                 alpha: float = 0.45, colormap: str = "jet", signed: bool = False) -> np.ndarray:
    """An explanation tile for display: the face enlarged to ``size`` (:func:`enlarge`), the map over it exactly as
    :func:`overlay` draws it, and, with ``mask``, the ground-truth relevance region outlined (:func:`outline`), so
    one can see at a glance whether the map lies on it."""
    tile = overlay(enlarge(image, size), map, alpha=alpha, colormap=colormap, signed=signed)
    return tile if mask is None else outline(tile, mask)


def outline(image: np.ndarray, mask: np.ndarray, *, color: tuple[int, int, int] = (255, 255, 255),
            thickness: int | None = None) -> np.ndarray:
    """The image with the border of a 0/1 mask (any size; resized to the image, nearest) drawn on it.

    ``thickness`` defaults to about 1% of the image's side (at least 1 pixel)."""
    rgb = to_rgb(image).copy()
    h, w = rgb.shape[:2]
    m = (np.asarray(mask) > 0).astype(np.uint8)
    if m.ndim != 2:
        raise ValueError(f"mask must be h x w, got shape {m.shape}")
    if m.shape != (h, w):
        m = cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(rgb, contours, -1, color, thickness or max(1, round(min(h, w) / 100)), cv2.LINE_AA)
    return rgb


def mask_tile(image: np.ndarray, mask: np.ndarray, *, size: int = 224, dim: float = 0.35) -> np.ndarray:
    """A ground-truth relevance mask for display: the face enlarged to ``size``, the pixels outside the mask dimmed
    to ``dim`` of their brightness, and the mask outlined as in :func:`overlay_tile`."""
    face = enlarge(image, size)
    m = cv2.resize((np.asarray(mask) > 0).astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    shaded = np.where(m[..., None] > 0, face, (face.astype(np.float32) * dim).round().astype(np.uint8))
    return outline(shaded, m)


def draw_boxes(image: np.ndarray, boxes: Sequence[Sequence[int]], labels: Sequence[str] | None = None, *,
               selected: int | None = None, color: tuple[int, int, int] = (0, 200, 83),
               selected_color: tuple[int, int, int] = (255, 193, 7)) -> np.ndarray:
    """A copy of the image with face boxes ``(x, y, w, h)`` drawn and labelled (default ``1``, ``2``, ...); the
    ``selected`` box (an index) in its own colour. Line width and text scale follow the image's size."""
    rgb = to_rgb(image).copy()
    h, w = rgb.shape[:2]
    thick = max(2, round(max(h, w) / 300))
    scale = max(0.5, max(h, w) / 900)
    labels = list(labels) if labels is not None else [str(i + 1) for i in range(len(boxes))]
    if len(labels) != len(boxes):
        raise ValueError(f"{len(labels)} labels for {len(boxes)} boxes")
    for i, (box, text) in enumerate(zip(boxes, labels, strict=True)):
        x, y, bw, bh = (int(round(v)) for v in box)
        c = selected_color if i == selected else color
        cv2.rectangle(rgb, (x, y), (x + bw, y + bh), c, thick, cv2.LINE_AA)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = y - base - thick if y - th - base - thick > 0 else y + bh + th + thick
        cv2.rectangle(rgb, (x, ty - th - thick), (x + tw + 2 * thick, ty + base), c, -1)
        cv2.putText(rgb, text, (x + thick, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return rgb
