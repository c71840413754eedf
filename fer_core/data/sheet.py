"""Contact sheets: a grid of faces with their relevance masks, to look at a data set by eye."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np


def mask_overlay(image: np.ndarray, mask: np.ndarray, color=(255, 40, 40), alpha: float = 0.55) -> np.ndarray:
    """The face dimmed, with the mask's pixels tinted (RGB uint8 in and out)."""
    out = image.astype(np.float32) * 0.6
    m = mask.astype(bool)
    out[m] = out[m] * (1 - alpha) / 0.6 + np.asarray(color, np.float32) * alpha
    return np.clip(out, 0, 255).astype(np.uint8)


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    cv2.putText(tile, text, (6, tile.shape[0] // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
    return tile


def synthfaces_rows(per_row: int = 6, **options) -> list[tuple[str, list[int]]]:
    """Rows of a SynthFACS sheet: (title, test-split indices): one row per class (frontal, unoccluded),
    one per occluder, one per pose range."""
    from .synthfaces import OCCLUDERS, SynthFaces

    options.setdefault("label_set", "basic8")
    ds = SynthFaces("test", **options)
    rules: list[tuple[str, Callable]] = []
    for k, cls in enumerate(ds.classes):
        rules.append((cls, lambda m, k=k: m.clean_label == k and m.spec.occluder == "none"
                      and abs(m.spec.yaw) < 20 and m.blend is None and m.intensity > 0.55))
    for occ in OCCLUDERS[1:]:
        rules.append((f"occ: {occ}", lambda m, occ=occ: m.spec.occluder == occ))
    for lo, hi in ((0, 15), (15, 30), (30, 45), (45, 61)):
        rules.append((f"yaw {lo}-{min(hi, 60)}", lambda m, lo=lo, hi=hi: lo <= abs(m.spec.yaw) < hi
                      and m.spec.occluder == "none"))
    rows = []
    for title, rule in rules:
        idx = [i for i in range(len(ds)) if rule(ds.meta(i))][:per_row]
        rows.append((title, idx))
    return rows


def contact_sheet(name: str, out: str | Path, per_row: int = 6, scale: int = 1, **options) -> Path:
    """Write a PNG contact sheet of a data set: each face with its relevance mask beside it.

    Args:
        name: data set name (``synthfaces``).
        out: path of the PNG to write.
        per_row: faces per row.
        scale: integer upscaling of every tile.
        **options: data set options (for SynthFACS: image_size, seed, ...).
    """
    if name != "synthfaces":
        raise ValueError(f"contact sheets need ground-truth masks; only 'synthfaces' has them (got {name!r})")
    from .synthfaces import SynthFaces

    options.setdefault("label_set", "basic8")
    ds = SynthFaces("test", **options)
    size = ds.image_size * scale
    label_w = 150
    rows = []
    for title, idx in synthfaces_rows(per_row, **options):
        tiles = [_label(np.full((size, label_w, 3), 245, np.uint8), title)]
        for i in idx:
            image, mask, _ = ds.render(i)
            pair = [image, mask_overlay(image, mask)]
            for t in pair:
                tiles.append(cv2.resize(t, (size, size), interpolation=cv2.INTER_NEAREST) if scale > 1 else t)
            tiles.append(np.full((size, 4, 3), 255, np.uint8))
        width = label_w + per_row * (2 * size + 4)
        row = np.concatenate(tiles, 1)
        row = np.pad(row, ((0, 2), (0, width - row.shape[1]), (0, 0)), constant_values=255)
        rows.append(row)
    sheet = np.concatenate(rows, 0)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), sheet[..., ::-1]):
        raise OSError(f"could not write contact sheet to {out}")
    return out
