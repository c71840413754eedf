"""Charts of an evaluation beyond the confusion matrix: reliability diagrams (calibration), accuracy per SynthFACS
factor bin, and counterfactual probes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.charts.common import (
    GAIN_COLOR,
    LOSS_COLOR,
    REFERENCE_COLOR,
    RUN_PALETTE,
    TRAIN_COLOR,
    _interval_bars,
    _legend_above,
    _legend_below,
    run_colors,
)

GAP_COLOR = "rgba(192, 57, 43, 0.35)"
"""The gap between a bin's accuracy and its mean confidence on a reliability diagram (Guo et al.'s red bars)."""


def reliability_diagram(curves: Mapping[str, Mapping[str, Any] | None], colors: Mapping[str, str] | None = None, *,
                        bars: bool = True, title: str | None = None) -> go.Figure:
    """A reliability diagram: accuracy against confidence per confidence bin, with the diagonal of perfect
    calibration (a bar below the diagonal is over-confidence).

    Args:
        curves: ``{label: reliability}``, each the ``reliability`` of an eval result
            (:func:`fer_core.calibration.reliability_bins`: ``edges``, ``count``, ``confidence``, ``accuracy``, None
            for an empty bin), e.g. ``{"before": ..., "after T=1.6": ...}`` or one per run. None values are skipped.
        colors: ``{label: colour}`` (default :func:`run_colors`).
        bars: draw the first curve as bars of accuracy per bin with the gap to its mean confidence shaded, the others
            as lines; else every curve as a line through (mean confidence, accuracy), marker size by face count.
        title: figure title.

    The hover gives each bin's range, faces, accuracy and mean confidence.
    """
    colors = colors or run_colors(list(curves))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                             line={"color": REFERENCE_COLOR, "dash": "dash", "width": 1.5}, hoverinfo="skip"))
    first = True
    for label, rel in curves.items():
        if not rel:
            continue
        edges = np.asarray(rel["edges"], dtype=float)
        keep = [i for i, n in enumerate(rel["count"]) if n and rel["accuracy"][i] is not None]
        if not keep:
            continue
        acc = np.array([rel["accuracy"][i] for i in keep], dtype=float)
        conf = np.array([rel["confidence"][i] for i in keep], dtype=float)
        counts = np.array([rel["count"][i] for i in keep], dtype=float)
        low, high = edges[keep], edges[[i + 1 for i in keep]]
        custom = np.column_stack([100 * low, 100 * high, counts, 100 * acc, 100 * conf])
        hover = (f"{label}<br>confidence %{{customdata[0]:.0f}}–%{{customdata[1]:.0f}}%: %{{customdata[2]:.0f}} "
                 "faces<br>accuracy %{customdata[3]:.1f}%, mean confidence %{customdata[4]:.1f}%<extra></extra>")
        color = colors.get(label, TRAIN_COLOR)
        if bars and first:
            centre, width = (low + high) / 2, high - low
            fig.add_trace(go.Bar(x=centre, y=acc, width=width, name=f"{label}: accuracy", marker_color=color,
                                 marker_line={"color": "white", "width": 1}, opacity=0.85, customdata=custom,
                                 hovertemplate=hover))
            fig.add_trace(go.Bar(x=centre, y=conf - acc, base=acc, width=width, name=f"{label}: gap to confidence",
                                 marker_color=GAP_COLOR, marker_line={"color": "#c0392b", "width": 1},
                                 customdata=custom, hovertemplate=hover))
        else:
            size = 6 + 14 * np.sqrt(counts / counts.max())
            fig.add_trace(go.Scatter(x=conf, y=acc, mode="lines+markers", name=label,
                                     line={"color": color, "width": 2}, marker={"color": color, "size": size},
                                     customdata=custom, hovertemplate=hover))
        first = False
    fig.update_xaxes(title_text="confidence (top class's probability)", range=[0, 1], tickformat=".0%", dtick=0.2,
                     constrain="domain")
    fig.update_yaxes(title_text="accuracy", range=[0, 1], tickformat=".0%", dtick=0.2, scaleanchor="x",
                     scaleratio=1)
    fig.update_layout(title=title, barmode="overlay", bargap=0, height=420, hovermode="closest",
                      margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10}, legend=_legend_below(-0.18))
    return fig


def factor_accuracy(frame: Any, *, x_title: str, numeric: bool = True, colors: Mapping[str, str] | None = None,
                    overall: Mapping[str, float] | None = None) -> go.Figure:
    """Accuracy per bin of one SynthFACS factor for one or more runs, with 95% Wilson intervals as error bars.

    Args:
        frame: ``fer_core.factors.factor_frame`` output (``run``, ``bin``, ``x``, ``n``, ``accuracy``, ``ci_low``,
            ``ci_high``; 0-1 fractions); empty bins (``n`` 0) are left out.
        x_title: the factor, for the axis title.
        numeric: bins on a number line (lines through the bin centres); else categories (grouped bars).
        colors: ``{run label: colour}`` (default :func:`run_colors`).
        overall: ``{run label: accuracy on the whole split}``, drawn as a dotted line per run.
    """
    runs = list(dict.fromkeys(frame["run"]))
    colors = colors or run_colors(runs)
    fig = go.Figure()
    for run in runs:
        rows = frame[(frame["run"] == run) & (frame["n"] > 0)]
        acc = 100.0 * rows["accuracy"].to_numpy(dtype=float)
        low = 100.0 * rows["ci_low"].to_numpy(dtype=float)
        high = 100.0 * rows["ci_high"].to_numpy(dtype=float)
        color = colors.get(run, TRAIN_COLOR)
        common = {
            "x": rows["x"].tolist() if numeric else rows["bin"].tolist(), "y": acc, "name": str(run),
            "legendgroup": str(run), "error_y": _interval_bars(acc, low, high, color),
            "customdata": np.column_stack([rows["bin"].astype(str), rows["n"].astype(int), low, high]),
            "hovertemplate": f"{run}<br>{x_title}: %{{customdata[0]}}<br>accuracy %{{y:.1f}}% (95% CI "
                             "%{customdata[2]:.1f} to %{customdata[3]:.1f}) on %{customdata[1]} faces<extra></extra>",
        }
        fig.add_trace(go.Scatter(mode="lines+markers", line={"color": color, "width": 2}, marker={"size": 7},
                                 **common) if numeric else go.Bar(marker_color=color, **common))
        if overall and overall.get(run) is not None:
            fig.add_hline(y=100.0 * overall[run], line={"color": color, "width": 1, "dash": "dot"})
    if numeric:
        ticks = frame.drop_duplicates("bin")
        ticks = ticks[[isinstance(x, (int, float)) for x in ticks["x"]]]
        fig.update_xaxes(tickmode="array", tickvals=ticks["x"].tolist(), ticktext=ticks["bin"].tolist())
    else:
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=list(dict.fromkeys(frame["bin"])))
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text="accuracy (%)", ticksuffix="%", range=[0, 100])
    fig.update_layout(height=340, margin={"l": 10, "r": 10, "t": 30, "b": 10}, hovermode="closest", barmode="group",
                      bargap=0.25, showlegend=len(runs) > 1, legend=_legend_above())
    return fig


def probe_curve(result: Mapping[str, Any]) -> go.Figure:
    """A counterfactual probe (``fer_core.probe.probe``): left, accuracy, mean probability of the true class and the
    share of faces whose prediction flipped against the reference step; right, the share predicted as each class.

    Args:
        result: the probe's JSON (``steps``, ``reference``, ``numeric``, ``title``, ``n``, ``class_names`` and
            ``summary``: per step ``accuracy``, ``true_prob``, ``flip_rate``, ``share``).
    """
    rows, names = result["summary"], list(result["class_names"])
    numeric = bool(result.get("numeric", True))
    x = [r["step"] if numeric else str(r["step"]) for r in rows]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.1,
                        subplot_titles=(f"On the same {result['n']} faces", "Predicted as"))
    lines = (("accuracy", "accuracy", TRAIN_COLOR, "solid"), ("true_prob", "P(true class)", GAIN_COLOR, "dash"),
             ("flip_rate", f"flipped vs {result['reference']}", LOSS_COLOR, "dot"))
    for key, label, color, dash in lines:
        fig.add_trace(go.Scatter(x=x, y=[100.0 * r[key] for r in rows], name=label, mode="lines+markers",
                                 line={"color": color, "width": 2, "dash": dash}, marker={"size": 6},
                                 hovertemplate=f"{label}<br>{result['title']} = %{{x}}: %{{y:.1f}}%<extra></extra>"),
                      row=1, col=1)
    for k, name in enumerate(names):
        fig.add_trace(go.Bar(x=x, y=[100.0 * r["share"][name] for r in rows], name=name, legendgroup="classes",
                             marker_color=RUN_PALETTE[k % len(RUN_PALETTE)],
                             hovertemplate=f"{name}<br>{result['title']} = %{{x}}: %{{y:.1f}}% of the faces"
                             "<extra></extra>"), row=1, col=2)
    fig.update_xaxes(title_text=result["title"], type="linear" if numeric else "category")
    fig.update_yaxes(ticksuffix="%", range=[0, 100])
    fig.update_layout(barmode="stack", bargap=0.15, height=380, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      hovermode="closest", legend={"orientation": "v"})
    return fig
