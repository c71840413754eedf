"""What the figures of :mod:`app.charts` share: the train / validation / reference colours, one colour per run, the
gain and loss colours, the class count above which class charts thin out, whole-epoch ticks, legend placement and
interval error bars."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

TRAIN_COLOR = "#3b6fd8"
VAL_COLOR = "#e8710a"
REFERENCE_COLOR = "#9aa0a6"


def _legend_below(y: float = -0.2) -> dict[str, Any]:
    """A horizontal legend under the plot, left-aligned (``y`` below the axes, in plot heights)."""
    return {"orientation": "h", "yanchor": "top", "y": y, "xanchor": "left", "x": 0.0}


def _legend_above(y: float = 1.02) -> dict[str, Any]:
    """A horizontal legend over the plot, right-aligned."""
    return {"orientation": "h", "yanchor": "bottom", "y": y, "xanchor": "right", "x": 1.0}


def epoch_dtick(epochs: int) -> int | None:
    """Whole-epoch ticks for short runs (plotly would otherwise label 0.5 epochs); automatic for long ones."""
    return 1 if epochs <= 12 else None


MANY_CLASSES = 30
"""Above this many classes (an identity-pretraining run has hundreds) the class charts drop per-cell text, thin the
tick labels and cap their height, and per-class bars show the lowest ones only."""


RUN_PALETTE = ("#3b6fd8", "#e8710a", "#2a9d8f", "#8e44ad", "#c0392b", "#7f8c8d", "#b8860b", "#16a085", "#d35400",
               "#2c3e50", "#e84393", "#6c5ce7")
"""One colour per compared run (the first two match the single-run train/val colours)."""


GAIN_COLOR, LOSS_COLOR = "#2a9d8f", "#c0392b"


def run_colors(labels: Sequence[str]) -> dict[str, str]:
    """A colour per run label, in order, from :data:`RUN_PALETTE` (cycling after twelve runs)."""
    return {label: RUN_PALETTE[i % len(RUN_PALETTE)] for i, label in enumerate(labels)}


def _interval_bars(mean: np.ndarray, low: np.ndarray, high: np.ndarray, color: str) -> dict[str, Any]:
    """Asymmetric error bars from ``low`` to ``high`` (NaN bounds: no bar)."""
    plus, minus = np.nan_to_num(high - mean), np.nan_to_num(mean - low)
    return {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus, "visible": True,
            "thickness": 1.5, "width": 5, "color": color}
