"""SCN's importance weights: their histograms per class, their means per epoch, and its relabel events."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.charts.common import (
    GAIN_COLOR,
    LOSS_COLOR,
    REFERENCE_COLOR,
    TRAIN_COLOR,
    VAL_COLOR,
    _legend_above,
    _legend_below,
    epoch_dtick,
)

SCN_GROUP_COLORS = {"high": TRAIN_COLOR, "low": VAL_COLOR}
"""SCN's high- and low-importance groups."""
NOISE_COLORS = {"clean": GAIN_COLOR, "noisy": LOSS_COLOR}
"""Faces with their clean label, and faces whose label injected noise flipped."""
RELABEL_COLORS = {"fixed": GAIN_COLOR, "broke": LOSS_COLOR, "still wrong": REFERENCE_COLOR}
"""What a relabel event did: restored the clean label, replaced a correct one, or replaced a wrong one by another."""


def scn_weight_histograms(samples: Any, classes: Sequence[str], colour_by: str = "group") -> go.Figure:
    """One histogram of SCN importance weights per class (the label trained on), stacked by group or by noise.

    Args:
        samples: one epoch's faces (``fer_core.explain.attention.scn_samples``): a DataFrame with ``label``,
            ``weight``, ``group`` (``high``/``low``) and ``noisy``.
        classes: class names, in label order.
        colour_by: ``"group"`` (high / low importance) or ``"noise"`` (injected / clean label).
    """
    cols = min(4, len(classes))
    rows = math.ceil(len(classes) / cols)
    counts = samples["label"].value_counts()
    titles = [f"{c} ({int(counts.get(k, 0))})" for k, c in enumerate(classes)]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, shared_xaxes=True, horizontal_spacing=0.05,
                        vertical_spacing=0.12 if rows > 1 else 0.0)
    if colour_by == "noise":
        parts = {"clean": ~samples["noisy"], "noisy": samples["noisy"]}
        colors, names = NOISE_COLORS, {"clean": "clean label", "noisy": "injected noise"}
    else:
        parts = {"high": samples["group"] == "high", "low": samples["group"] == "low"}
        colors, names = SCN_GROUP_COLORS, {"high": "high-importance group", "low": "low-importance group"}
    in_legend: set[str] = set()  # plotly leaves empty traces out of the legend: name each part on its first faces
    for k, _cls in enumerate(classes):
        row, col = k // cols + 1, k % cols + 1
        for part, sel in parts.items():
            values = samples.loc[sel & (samples["label"] == k), "weight"].dropna()
            first = part not in in_legend and len(values) > 0
            if first:
                in_legend.add(part)
            fig.add_trace(go.Histogram(
                x=values, xbins={"start": 0.0, "end": 1.0, "size": 0.05}, name=names[part], legendgroup=part,
                showlegend=first, marker_color=colors[part],
                hovertemplate=f"{names[part]}<br>weight %{{x}}<br>%{{y}} faces<extra></extra>",
            ), row=row, col=col)
    fig.update_xaxes(range=[0, 1], dtick=0.25)
    for col in range(1, cols + 1):
        fig.update_xaxes(title_text="importance weight", row=rows, col=col)
    for row in range(1, rows + 1):
        fig.update_yaxes(title_text="faces", row=row, col=1)
    fig.update_layout(barmode="stack", height=60 + 220 * rows, margin={"l": 10, "r": 10, "t": 60, "b": 10},
                      legend=_legend_above(1.06), bargap=0.05)
    return fig


def scn_weight_curves(summary: Any, noisy: bool) -> go.Figure:
    """Mean SCN importance weight per epoch: high and low groups, and noisy against clean faces when there is noise.

    Args:
        summary: ``fer_core.explain.attention.scn_epoch_summary`` (``epoch``, ``weight_high``, ``weight_low``,
            ``weight_clean``, ``weight_noisy``).
        noisy: the run had injected label noise (draw the clean and noisy lines).
    """
    lines = [("weight_high", "high-importance group", SCN_GROUP_COLORS["high"], "dot"),
             ("weight_low", "low-importance group", SCN_GROUP_COLORS["low"], "dot")]
    if noisy:
        lines = [("weight_clean", "faces with a clean label", NOISE_COLORS["clean"], "solid"),
                 ("weight_noisy", "faces with injected noise", NOISE_COLORS["noisy"], "solid"), *lines]
    fig = go.Figure()
    for column, name, color, dash in lines:
        fig.add_trace(go.Scatter(
            x=summary["epoch"], y=summary[column], name=name, mode="lines+markers",
            line={"color": color, "dash": dash, "width": 2}, marker={"size": 6},
            hovertemplate=f"{name}<br>epoch %{{x}}: mean weight %{{y:.3f}}<extra></extra>",
        ))
    fig.update_xaxes(title_text="epoch", dtick=epoch_dtick(len(summary)))
    fig.update_yaxes(title_text="mean importance weight", range=[0, 1])
    fig.update_layout(height=340, margin={"l": 10, "r": 10, "t": 40, "b": 10}, hovermode="x unified",
                      title="Mean importance weight per epoch", legend=_legend_below())
    return fig


def scn_relabel_bars(summary: Any) -> go.Figure:
    """SCN's relabel events per epoch, stacked by what they did to the label.

    Args:
        summary: ``fer_core.explain.attention.scn_epoch_summary`` (``epoch``, ``relabelled``, ``fixed``, ``broke``).
    """
    fig = go.Figure()
    other = summary["relabelled"] - summary["fixed"] - summary["broke"]
    for name, values in (("fixed", summary["fixed"]), ("broke", summary["broke"]), ("still wrong", other)):
        fig.add_trace(go.Bar(x=summary["epoch"], y=values, name=name, marker_color=RELABEL_COLORS[name],
                             hovertemplate=f"epoch %{{x}}: %{{y}} relabels {name}<extra></extra>"))
    fig.update_xaxes(title_text="epoch", dtick=epoch_dtick(len(summary)))
    fig.update_yaxes(title_text="relabelled faces")
    fig.update_layout(barmode="stack", height=300, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      title="Relabel events per epoch", legend={**_legend_below(-0.25), "traceorder": "normal"})
    return fig
