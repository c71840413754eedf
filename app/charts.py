"""Plotly figures for the pages: learning curves and confusion matrices. Pure functions of plain data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

TRAIN_COLOR = "#3b6fd8"
VAL_COLOR = "#e8710a"


def learning_curves(metrics: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Loss and accuracy per epoch, train and validation, side by side.

    Args:
        metrics: rows of ``metrics.jsonl`` (``epoch``, ``train_loss``, ``val_loss``, ``train_acc``, ``val_acc``).
            Missing values are skipped, so a run without validation still plots its training curve.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"), horizontal_spacing=0.08)
    for col, kind in ((1, "loss"), (2, "acc")):
        for split, color in (("train", TRAIN_COLOR), ("val", VAL_COLOR)):
            points = [(m["epoch"], m[f"{split}_{kind}"]) for m in metrics
                      if isinstance(m.get(f"{split}_{kind}"), int | float) and m.get("epoch") is not None]
            if not points:
                continue
            x, y = zip(*points, strict=True)
            if kind == "acc":
                y = [100.0 * v for v in y]
            fig.add_trace(
                go.Scatter(
                    x=x, y=y, name=split, legendgroup=split, showlegend=col == 1,
                    mode="lines+markers", line={"color": color, "width": 2}, marker={"size": 6},
                    hovertemplate=f"{split} epoch %{{x}}<br>{kind} %{{y:.3f}}" + ("%" if kind == "acc" else "")
                    + "<extra></extra>",
                ),
                row=1, col=col,
            )
    fig.update_xaxes(title_text="epoch", dtick=_epoch_dtick(metrics))
    fig.update_yaxes(title_text="cross-entropy", row=1, col=1)
    fig.update_yaxes(title_text="accuracy (%)", ticksuffix="%", row=1, col=2)
    fig.update_layout(
        height=340, margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.08, "xanchor": "right", "x": 1.0},
        hovermode="x unified",
    )
    return fig


def _epoch_dtick(metrics: Sequence[Mapping[str, Any]]) -> int | None:
    """Whole-epoch ticks for short runs (plotly would otherwise label 0.5 epochs); automatic for long ones."""
    return 1 if len(metrics) <= 12 else None


def confusion_matrix(
    confusion: Sequence[Sequence[float]],
    class_names: Sequence[str],
    *,
    normalise: bool = False,
    title: str | None = None,
) -> go.Figure:
    """A confusion-matrix heatmap: true class down the rows (first class on top), predicted across.

    Args:
        confusion: square matrix of counts, ``confusion[true][pred]``.
        class_names: names of the classes, in the matrix's order.
        normalise: divide each row by its total, so a cell reads "share of true class X predicted as Y"
            (the diagonal is per-class recall); empty rows stay 0.
        title: figure title.
    """
    counts = np.asarray(confusion, dtype=float)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(class_names):
        raise ValueError(f"confusion matrix of shape {counts.shape} does not match {len(class_names)} class names")
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    if normalise:
        z, text = shares * 100.0, [[f"{v:.0f}%" for v in row] for row in shares * 100.0]
        zmax, colorbar = 100.0, {"title": "% of row", "ticksuffix": "%"}
    else:
        z, text = counts, [[f"{int(v)}" for v in row] for row in counts]
        zmax, colorbar = max(1.0, float(counts.max(initial=0))), {"title": "faces"}
    custom = np.dstack([counts, shares * 100.0])
    names = list(class_names)
    fig = go.Figure(
        go.Heatmap(
            z=z, x=names, y=names, text=text, texttemplate="%{text}", customdata=custom,
            colorscale="Blues", zmin=0.0, zmax=zmax, colorbar={**colorbar, "thickness": 12},
            hovertemplate="true %{y}, predicted %{x}<br>%{customdata[0]:.0f} faces (%{customdata[1]:.1f}% of row)"
            "<extra></extra>",
            xgap=1, ygap=1,
        )
    )
    fig.update_yaxes(title_text="true class", autorange="reversed", tickmode="array", tickvals=names)
    fig.update_xaxes(title_text="predicted class", tickmode="array", tickvals=names, tickangle=-35)
    fig.update_layout(
        title=title, height=120 + 42 * len(names), margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        plot_bgcolor="white",
    )
    return fig


def per_class_recall(results: Mapping[str, tuple[Sequence[Sequence[float]], Sequence[str]]]) -> go.Figure:
    """Per-class recall (the confusion matrix's normalised diagonal) as horizontal bars, one colour per result.

    Args:
        results: ``{label: (confusion, class_names)}``, e.g. ``{"test/all": ..., "test/occlusion": ...}`` to see
            which expressions a subset makes harder. Classes are matched by name.
    """
    fig = go.Figure()
    palette = (TRAIN_COLOR, VAL_COLOR, "#2a9d8f", "#8e44ad")
    order: list[str] = []
    for i, (label, (confusion, class_names)) in enumerate(results.items()):
        counts = np.asarray(confusion, dtype=float)
        totals = counts.sum(axis=1)
        recall = np.divide(np.diag(counts), totals, out=np.full(len(totals), np.nan), where=totals > 0) * 100.0
        order = order or list(class_names)
        fig.add_trace(go.Bar(
            x=recall, y=list(class_names), orientation="h", name=label, marker_color=palette[i % len(palette)],
            text=[f"{v:.0f}%" if np.isfinite(v) else "n/a" for v in recall], textposition="outside",
            customdata=totals, hovertemplate=f"{label}<br>%{{y}}: %{{x:.1f}}% of %{{customdata:.0f}}<extra></extra>",
        ))
    fig.update_yaxes(autorange="reversed", categoryorder="array", categoryarray=order)
    fig.update_xaxes(title_text="recall (% of the true class)", range=[0, 115], ticksuffix="%", dtick=25)
    fig.update_layout(
        title="Per-class recall", barmode="group", height=120 + 42 * max(1, len(order)),
        margin={"l": 10, "r": 10, "t": 40, "b": 10}, bargap=0.25,
        legend={"orientation": "h", "yanchor": "top", "y": -0.18, "xanchor": "left", "x": 0.0},
    )
    return fig
