"""Data set charts: faces per class and split, and image tiles with captions for a row of faces."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from app.charts.common import GAIN_COLOR, MANY_CLASSES, TRAIN_COLOR, VAL_COLOR, _legend_above

SPLIT_COLORS = {"train": TRAIN_COLOR, "val": VAL_COLOR, "test": GAIN_COLOR}
"""One colour per data set split."""


def class_counts(counts: Mapping[str, Sequence[int]], classes: Sequence[str]) -> go.Figure:
    """Faces per class, one group of bars per class and one colour per split.

    Args:
        counts: ``{split: faces per class}`` in the order of ``classes`` (``fer_core.data.browse.class_counts``).
        classes: the data set's class names.
    """
    fig = go.Figure()
    for split, values in counts.items():
        values = np.asarray(values)
        total = max(1, int(values.sum()))
        fig.add_trace(go.Bar(
            x=list(classes), y=values.tolist(), name=f"{split} ({int(values.sum()):,})",
            marker_color=SPLIT_COLORS.get(split), text=[f"{v:,}" for v in values] if len(classes) <= MANY_CLASSES
            else None, textposition="outside",
            customdata=100.0 * values / total,
            hovertemplate=f"{split}<br>%{{x}}: %{{y:,}} faces (%{{customdata:.1f}}% of the split)<extra></extra>",
        ))
    fig.update_layout(barmode="group", height=360, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      title="Faces per class and split", legend=_legend_above())
    fig.update_yaxes(title_text="faces")
    fig.update_xaxes(title_text="class")
    return fig


def face_tiles(faces: Sequence[Mapping[str, Any]], classes: Sequence[str], *, masks: bool = False,
               details: bool = False) -> tuple[list[np.ndarray], list[str]]:
    """Images and captions for a row of data-set faces (``st.image(images, caption=captions)``).

    Args:
        faces: ``fer_core.data.browse.faces`` rows (``image``, ``class_name``, ``label``; where the data set has them
            ``mask``, ``clean_label``, ``pose``, ``occluder``).
        classes: the data set's class names (for a clean label that differs from the label trained on).
        masks: tint each face's ground-truth relevance mask over it, where it has one.
        details: add the yaw and the occluder to the captions.
    """
    from fer_core.data.sheet import mask_overlay  # fer_core.data imports torch: only when faces are drawn

    images, captions = [], []
    for f in faces:
        images.append(mask_overlay(f["image"], f["mask"]) if masks and "mask" in f else f["image"])
        caption = f["class_name"]
        if "clean_label" in f and f["clean_label"] != f["label"]:
            caption += f" (clean: {classes[f['clean_label']]})"
        if details and "pose" in f:
            caption += f" · yaw {round(f['pose'][0]):+d}°"
        if details and f.get("occluder") not in (None, "none"):
            caption += f" · {f['occluder']}"
        captions.append(caption)
    return images, captions
