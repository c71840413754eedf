"""Confusion matrices (plain, clickable, and the difference of two runs'), per-class recall and per-class accuracy
differences between runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from app.charts.common import GAIN_COLOR, LOSS_COLOR, MANY_CLASSES, TRAIN_COLOR, VAL_COLOR, _legend_below, run_colors


def _class_axes(fig: go.Figure, names: list[str], *, title: str | None) -> None:
    """Axes and height of a class x class heatmap: every class labelled up to :data:`MANY_CLASSES`, else plotly's
    thinned labels on a plot of at most 900 px."""
    many = len(names) > MANY_CLASSES
    ticks = {"tickmode": "auto", "nticks": 24} if many else {"tickmode": "array", "tickvals": names}
    fig.update_yaxes(title_text="true class", autorange="reversed", **ticks)
    fig.update_xaxes(title_text="predicted class", tickangle=-35, **ticks)
    fig.update_layout(title=title, height=min(900, 160 + 4 * len(names)) if many else 120 + 42 * len(names),
                      margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10}, plot_bgcolor="white")


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

    With more than :data:`MANY_CLASSES` classes the cells carry no text (hover says it) and the labels are thinned.
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
    many = len(names) > MANY_CLASSES
    fig = go.Figure(
        go.Heatmap(
            z=z, x=names, y=names, text=None if many else text, texttemplate=None if many else "%{text}",
            customdata=custom, colorscale="Blues", zmin=0.0, zmax=zmax, colorbar={**colorbar, "thickness": 12},
            hovertemplate="true %{y}, predicted %{x}<br>%{customdata[0]:.0f} faces (%{customdata[1]:.1f}% of row)"
            "<extra></extra>",
            xgap=0 if many else 1, ygap=0 if many else 1,
        )
    )
    _class_axes(fig, names, title=title)
    return fig


def per_class_recall(results: Mapping[str, tuple[Sequence[Sequence[float]], Sequence[str]]]) -> go.Figure:
    """Per-class recall (the confusion matrix's normalised diagonal) as horizontal bars, one colour per result.

    Args:
        results: ``{label: (confusion, class_names)}``, e.g. ``{"test/all": ..., "test/occlusion": ...}`` to see
            which expressions a subset makes harder. Classes are matched by name. With more than
            :data:`MANY_CLASSES` classes only the :data:`MANY_CLASSES` of lowest recall in the first result are drawn.
    """
    fig = go.Figure()
    palette = (TRAIN_COLOR, VAL_COLOR, "#2a9d8f", "#8e44ad")
    order: list[str] = []
    title = "Per-class recall"
    for i, (label, (confusion, class_names)) in enumerate(results.items()):
        counts = np.asarray(confusion, dtype=float)
        totals = counts.sum(axis=1)
        recall = np.divide(np.diag(counts), totals, out=np.full(len(totals), np.nan), where=totals > 0) * 100.0
        names = list(class_names)
        if not order:
            order = names
            if len(names) > MANY_CLASSES:  # the weakest classes, the ones worth a look
                worst = np.argsort(np.nan_to_num(recall, nan=np.inf), kind="stable")[:MANY_CLASSES]
                order = [names[k] for k in worst]
                title = f"Per-class recall: the {MANY_CLASSES} lowest of {len(names)} classes"
        wanted = set(order)
        keep = [k for k, c in enumerate(names) if c in wanted]
        recall, totals, class_names = recall[keep], totals[keep], [names[k] for k in keep]
        fig.add_trace(go.Bar(
            x=recall, y=list(class_names), orientation="h", name=label, marker_color=palette[i % len(palette)],
            text=[f"{v:.0f}%" if np.isfinite(v) else "n/a" for v in recall], textposition="outside",
            customdata=totals, hovertemplate=f"{label}<br>%{{y}}: %{{x:.1f}}% of %{{customdata:.0f}}<extra></extra>",
        ))
    fig.update_yaxes(autorange="reversed", categoryorder="array", categoryarray=order)
    fig.update_xaxes(title_text="recall (% of the true class)", range=[0, 115], ticksuffix="%", dtick=25)
    fig.update_layout(
        title=title, barmode="group", height=120 + 42 * max(1, len(order)),
        margin={"l": 10, "r": 10, "t": 40, "b": 10}, bargap=0.25,
        legend=_legend_below(-0.18),
    )
    return fig


def confusion_difference(difference: Sequence[Sequence[float]], class_names: Sequence[str], *,
                         normalised: bool = True, title: str | None = None) -> go.Figure:
    """A ``B - A`` confusion-matrix heatmap on a diverging scale centred at 0 (red: B has more, blue: fewer).

    Args:
        difference: square matrix, ``difference[true][pred]`` (``fer_core.compare.confusion_difference``).
        class_names: the classes in the matrix's order.
        normalised: the values are percentage points of each true class (else numbers of faces).
        title: figure title.
    """
    diff = np.asarray(difference, dtype=float)
    names = list(class_names)
    if diff.shape != (len(names), len(names)):
        raise ValueError(f"difference matrix of shape {diff.shape} does not match {len(names)} class names")
    limit = max(1.0, float(np.nanmax(np.abs(diff), initial=0.0)))
    unit = "pp" if normalised else ""
    text = [[(f"{v:+.0f}" if round(v) else "0") for v in row] for row in diff]
    fig = go.Figure(go.Heatmap(
        z=diff, x=names, y=names, text=text, texttemplate="%{text}", colorscale="RdBu_r", zmid=0.0,
        zmin=-limit, zmax=limit, xgap=1, ygap=1,
        colorbar={"title": "B − A (pp of row)" if normalised else "B − A (faces)", "thickness": 12,
                  "ticksuffix": unit},
        hovertemplate="true %{y}, predicted %{x}<br>B − A: %{z:+.1f}" + (" pp" if normalised else " faces")
        + "<extra></extra>",
    ))
    fig.update_yaxes(title_text="true class", autorange="reversed", tickmode="array", tickvals=names)
    fig.update_xaxes(title_text="predicted class", tickmode="array", tickvals=names, tickangle=-35)
    fig.update_layout(title=title, height=120 + 42 * len(names),
                      margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10}, plot_bgcolor="white")
    return fig


def class_deltas(deltas: Any, colors: Mapping[str, str] | None = None, *, reference: str = "A") -> go.Figure:
    """Per-class accuracy differences to a reference run as horizontal bars: one colour per compared run, or for a
    single run green for gains and red for losses.

    Args:
        deltas: a DataFrame indexed by class name, one column per run, values in percentage points
            (``fer_core.compare.class_accuracy_deltas``).
        colors: ``{run label: colour}``.
        reference: the reference run's label, for the axis title.
    """
    colors = colors or run_colors(list(deltas.columns))
    classes = [str(c) for c in deltas.index]
    fig = go.Figure()
    single = len(deltas.columns) == 1
    for label in deltas.columns:
        values = np.asarray(deltas[label], dtype=float)
        color = ([GAIN_COLOR if v >= 0 else LOSS_COLOR for v in np.nan_to_num(values)] if single
                 else colors.get(label, TRAIN_COLOR))
        fig.add_trace(go.Bar(
            x=values, y=classes, orientation="h", name=str(label), marker_color=color,
            text=[f"{v:+.1f}" if np.isfinite(v) else "n/a" for v in values], textposition="outside",
            hovertemplate=f"{label}<br>%{{y}}: %{{x:+.1f}} pp<extra></extra>",
        ))
    span = float(np.nanmax(np.abs(deltas.to_numpy(dtype=float)), initial=0.0)) if deltas.size else 0.0
    span = max(5.0, 1.25 * span)
    fig.add_vline(x=0, line_color="#5f6368", line_width=1)
    fig.update_yaxes(autorange="reversed", categoryorder="array", categoryarray=classes)
    fig.update_xaxes(title_text=f"accuracy on the class minus {reference}'s (percentage points)", range=[-span, span],
                     zeroline=False)
    fig.update_layout(
        barmode="group", height=110 + len(classes) * (16 + 14 * min(4, max(1, len(deltas.columns)))),
        margin={"l": 10, "r": 10, "t": 10, "b": 10}, bargap=0.25, showlegend=not single,
        legend=_legend_below(-0.22),
    )
    return fig


def pickable_confusion_matrix(confusion: Sequence[Sequence[float]], class_names: Sequence[str], *,
                              normalise: bool = False, title: str | None = None,
                              selected: tuple[int, int] | None = None) -> go.Figure:
    """:func:`confusion_matrix` with an invisible marker over each cell, so clicking a cell selects it in
    ``st.plotly_chart(..., on_select="rerun", selection_mode="points")`` (plotly reports no selection on heatmaps);
    the selection's points carry ``x`` (predicted class) and ``y`` (true class). ``selected`` = (true, predicted)
    indices outlines that cell."""
    fig = confusion_matrix(confusion, class_names, normalise=normalise, title=title)
    counts = np.asarray(confusion, dtype=float)
    names = list(class_names)
    xs, ys, custom = [], [], []
    shares = np.divide(counts, counts.sum(axis=1, keepdims=True), out=np.zeros_like(counts),
                       where=counts.sum(axis=1, keepdims=True) > 0) * 100.0
    many = len(names) > MANY_CLASSES  # hundreds of classes: markers on the cells that hold faces only
    for t, true_name in enumerate(names):
        for p, pred_name in enumerate(names):
            if many and not counts[t, p]:
                continue
            xs.append(pred_name)
            ys.append(true_name)
            custom.append((counts[t, p], shares[t, p]))
    fig.update_traces(hoverinfo="skip", hovertemplate=None, selector={"type": "heatmap"})
    fig.add_trace(go.Scatter(
        x=xs, y=ys, mode="markers", showlegend=False, customdata=custom, name="cells",
        marker={"symbol": "square", "size": max(14, min(40, 280 // max(1, len(names)))), "color": "rgba(0,0,0,0)"},
        selected={"marker": {"opacity": 1.0}}, unselected={"marker": {"opacity": 1.0}},
        hovertemplate="true %{y}, predicted %{x}<br>%{customdata[0]:.0f} faces (%{customdata[1]:.1f}% of row)"
        "<br>click to see the faces<extra></extra>",
    ))
    if selected is not None:
        t, p = selected
        fig.add_shape(type="rect", x0=p - 0.5, x1=p + 0.5, y0=t - 0.5, y1=t + 0.5, xref="x", yref="y",
                      line={"color": "#e8710a", "width": 3}, fillcolor="rgba(0,0,0,0)")
    fig.update_layout(clickmode="event+select", dragmode=False)
    return fig
