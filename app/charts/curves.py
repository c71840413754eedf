"""Learning curves: loss and accuracy per epoch of one run (train and validation), or of several runs overlaid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.charts.common import TRAIN_COLOR, VAL_COLOR, _legend_below, epoch_dtick, run_colors


def learning_curves(metrics: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Loss and accuracy per epoch, train and validation, side by side (legend below the plots).

    Args:
        metrics: rows of ``metrics.jsonl`` (``epoch``, ``train_loss``, ``val_loss``, ``train_acc``, ``val_acc``).
            Missing values are skipped, so a run without validation still plots its training curve.
    """
    fig = _curve_panels(("Loss", "Accuracy"))
    for col, kind in ((1, "loss"), (2, "acc")):
        for split, color in (("train", TRAIN_COLOR), ("val", VAL_COLOR)):
            points = _curve_points(metrics, split, kind)
            if points is None:
                continue
            fig.add_trace(
                go.Scatter(
                    x=points[0], y=points[1], name=split, legendgroup=split, showlegend=col == 1,
                    mode="lines+markers", line={"color": color, "width": 2}, marker={"size": 6},
                    hovertemplate=f"{split} epoch %{{x}}<br>{kind} %{{y:.3f}}" + ("%" if kind == "acc" else "")
                    + "<extra></extra>",
                ),
                row=1, col=col,
            )
    _curve_axes(fig, len(metrics))
    fig.update_layout(height=360, hovermode="x unified")
    return fig


def _curve_panels(titles: tuple[str, str]) -> go.Figure:
    """Two side-by-side panels, loss then accuracy."""
    return make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.08)


def _curve_points(rows: Sequence[Mapping[str, Any]], split: str, kind: str) -> tuple[list, list] | None:
    """``(epochs, values)`` of ``{split}_{kind}`` (accuracy in percent) from metrics rows, skipping rows without
    the value; None if no row has it."""
    points = [(m["epoch"], m[f"{split}_{kind}"]) for m in rows
              if isinstance(m.get(f"{split}_{kind}"), int | float) and m.get("epoch") is not None]
    if not points:
        return None
    x, y = (list(v) for v in zip(*points, strict=True))
    return x, [100.0 * v for v in y] if kind == "acc" else y


def _curve_axes(fig: go.Figure, epochs: int) -> None:
    """Axis titles of :func:`_curve_panels`, whole-epoch ticks for short runs, the legend below the plots and room
    above the panel titles for plotly's mode bar (so nothing covers the titles or the lines on hover)."""
    fig.update_xaxes(title_text="epoch", dtick=epoch_dtick(epochs))
    fig.update_yaxes(title_text="cross-entropy", row=1, col=1)
    fig.update_yaxes(title_text="accuracy (%)", ticksuffix="%", row=1, col=2)
    fig.update_layout(margin={"l": 10, "r": 10, "t": 64, "b": 10},
                      legend=_legend_below())


def overlaid_curves(metrics: Mapping[str, Sequence[Mapping[str, Any]]],
                    colors: Mapping[str, str] | None = None) -> go.Figure:
    """Loss and accuracy per epoch of several runs in one figure: one colour per run, validation solid and
    training dotted, one legend entry per run (clicking it hides both of its curves).

    Args:
        metrics: ``{run label: rows of metrics.jsonl}``.
        colors: ``{run label: colour}`` (default :func:`run_colors`).
    """
    colors = colors or run_colors(list(metrics))
    fig = _curve_panels(tuple(f"{what} (solid: validation, dotted: training)" for what in ("Loss", "Accuracy")))
    for label, rows in metrics.items():
        shown = False
        for col, kind in ((1, "loss"), (2, "acc")):
            for split, dash in (("val", "solid"), ("train", "dot")):
                points = _curve_points(rows, split, kind)
                if points is None:
                    continue
                fig.add_trace(go.Scatter(
                    x=points[0], y=points[1], name=label, legendgroup=label, showlegend=not shown,
                    mode="lines+markers",
                    line={"color": colors.get(label, TRAIN_COLOR), "width": 2 if split == "val" else 1.5,
                          "dash": dash},
                    marker={"size": 5 if split == "val" else 3},
                    hovertemplate=f"{label} · {split}<br>epoch %{{x}}: %{{y:.3f}}" + ("%" if kind == "acc" else "")
                    + "<extra></extra>",
                ), row=1, col=col)
                shown = True
    _curve_axes(fig, max((len(rows) for rows in metrics.values()), default=0))
    fig.update_annotations(font_size=13)
    fig.update_layout(height=380, hovermode="closest")
    return fig
