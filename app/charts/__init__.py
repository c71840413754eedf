"""Plotly figures and image tiles for the pages: learning curves, confusion matrices, comparisons, probabilities, data
set counts and faces, SCN's importance weights. Pure functions of plain data (no Streamlit)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

TRAIN_COLOR = "#3b6fd8"
VAL_COLOR = "#e8710a"
REFERENCE_COLOR = "#9aa0a6"


def _legend_below(y: float = -0.2) -> dict[str, Any]:
    """A horizontal legend under the plot, left-aligned (``y`` below the axes, in plot heights)."""
    return {"orientation": "h", "yanchor": "top", "y": y, "xanchor": "left", "x": 0.0}


def _legend_above(y: float = 1.02) -> dict[str, Any]:
    """A horizontal legend over the plot, right-aligned."""
    return {"orientation": "h", "yanchor": "bottom", "y": y, "xanchor": "right", "x": 1.0}


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


def epoch_dtick(epochs: int) -> int | None:
    """Whole-epoch ticks for short runs (plotly would otherwise label 0.5 epochs); automatic for long ones."""
    return 1 if epochs <= 12 else None


MANY_CLASSES = 30
"""Above this many classes (an identity-pretraining run has hundreds) the class charts drop per-cell text, thin the
tick labels and cap their height, and per-class bars show the lowest ones only."""


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


# --------------------------------------------------------------------------------------------- comparing runs
RUN_PALETTE = ("#3b6fd8", "#e8710a", "#2a9d8f", "#8e44ad", "#c0392b", "#7f8c8d", "#b8860b", "#16a085", "#d35400",
               "#2c3e50", "#e84393", "#6c5ce7")
"""One colour per compared run (the first two match the single-run train/val colours)."""
SUBSET_COLORS = {"all": "#202124", "clean": "#7f8c8d", "occlusion": "#c0392b", "pose30": "#3b6fd8",
                 "pose45": "#8e44ad", "ambiguous": "#e8710a"}
"""One colour per evaluation subset, the same on every sweep chart."""
GAIN_COLOR, LOSS_COLOR = "#2a9d8f", "#c0392b"


def run_colors(labels: Sequence[str]) -> dict[str, str]:
    """A colour per run label, in order, from :data:`RUN_PALETTE` (cycling after twelve runs)."""
    return {label: RUN_PALETTE[i % len(RUN_PALETTE)] for i, label in enumerate(labels)}


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


def sweep_lines(agg: Any, *, x_title: str, y_title: str = "accuracy (%)", numeric: bool = True,
                facet: Sequence[str] = ()) -> go.Figure:
    """A metric against a swept value, one line per subset; with repeated seeds the mean with min-max error bars.

    Args:
        agg: ``fer_core.compare.accuracy_vs_swept`` output (``subset``, ``x``, ``mean``, ``min``, ``max``, ``n`` and
            the ``facet`` columns), values as 0-1 fractions.
        x_title: the swept key, for the axis title.
        y_title: the metric, for the axis title.
        numeric: the swept values are numbers (lines); else categories (grouped bars).
        facet: columns of ``agg`` whose value combinations get a panel each (one panel if empty).
    """
    facet = list(facet)
    panels = [tuple(k) if isinstance(k, tuple) else (k,) for k in agg.groupby(facet, sort=False, dropna=False).groups
              ] if facet and len(agg) else [()]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    titles = [", ".join(f"{k.rsplit('.', 1)[-1]}={v}" if k != "variant" else str(v)
                        for k, v in zip(facet, p, strict=True)) for p in panels] if facet else None
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, shared_yaxes=True, horizontal_spacing=0.05,
                        vertical_spacing=0.18)
    seen: set[str] = set()
    for i, panel in enumerate(panels):
        part = agg
        for key, value in zip(facet, panel, strict=True):
            part = part[part[key].isna()] if value is None or value != value else part[part[key] == value]
        order = {s: i for i, s in enumerate(SUBSET_COLORS)}
        for subset, rows_ in sorted(part.groupby("subset", sort=False), key=lambda kv: order.get(kv[0], 99)):
            mean, lo, hi = (100.0 * rows_[c].to_numpy(dtype=float) for c in ("mean", "min", "max"))
            repeated = bool((rows_["n"] > 1).any())
            x = [str(v) if not numeric else v for v in rows_["x"]]
            color = SUBSET_COLORS.get(subset, "#5f6368")
            common = {
                "x": x, "y": mean, "name": str(subset), "legendgroup": str(subset),
                "showlegend": subset not in seen, "customdata": np.column_stack([lo, hi, rows_["n"].to_numpy()]),
                "error_y": {"type": "data", "symmetric": False, "array": hi - mean, "arrayminus": mean - lo,
                            "visible": repeated, "thickness": 1.5, "width": 4, "color": "#202124"},
                "hovertemplate": f"{subset}<br>{x_title} = %{{x}}<br>%{{y:.1f}}%"
                + (" (min %{customdata[0]:.1f}, max %{customdata[1]:.1f}, %{customdata[2]} runs)" if repeated else "")
                + "<extra></extra>",
            }
            trace = (go.Scatter(mode="lines+markers", line={"color": color, "width": 2}, marker={"size": 8}, **common)
                     if numeric else go.Bar(marker_color=color, **common))
            fig.add_trace(trace, row=i // cols + 1, col=i % cols + 1)
            seen.add(str(subset))
    fig.update_xaxes(title_text=x_title, type="linear" if numeric else "category")
    fig.update_yaxes(ticksuffix="%")
    fig.update_yaxes(title_text=y_title, col=1)
    fig.update_layout(height=90 + 300 * rows, margin={"l": 10, "r": 10, "t": 40, "b": 10}, hovermode="closest",
                      legend={"title": "subset", "orientation": "v"}, barmode="group", bargap=0.3)
    if not numeric:  # bars start at 0: zoom on the range the values span
        values = np.concatenate([agg["min"].to_numpy(dtype=float), agg["max"].to_numpy(dtype=float)]) * 100.0
        if values.size and np.isfinite(values).any():
            low, high = float(np.nanmin(values)), float(np.nanmax(values))
            pad = max(2.0, 0.1 * (high - low))
            fig.update_yaxes(range=[max(0.0, low - pad), min(100.0, high + pad)])
    return fig


def sweep_lines_ci(agg: Any, **kwargs: Any) -> go.Figure:
    """:func:`sweep_lines` with error bars over the mean's 95% confidence interval instead of the min-max range.

    Args:
        agg: ``fer_core.compare.accuracy_vs_swept`` output; its ``low`` and ``high`` (NaN for one run: no bar) are
            drawn clipped to 0-100%, where an accuracy lives.
        **kwargs: as for :func:`sweep_lines`.
    """
    ci = agg.copy()
    repeated = ci["n"] > 1
    ci["min"] = ci["low"].where(repeated, ci["mean"]).astype(float).clip(lower=0.0)
    ci["max"] = ci["high"].where(repeated, ci["mean"]).astype(float).clip(upper=1.0)
    fig = sweep_lines(ci, **kwargs)
    for trace in fig.data:
        if trace.hovertemplate:
            trace.hovertemplate = trace.hovertemplate.replace("(min ", "(95% CI ").replace(", max ", " to ")
    return fig


def _interval_bars(mean: np.ndarray, low: np.ndarray, high: np.ndarray, color: str) -> dict[str, Any]:
    """Asymmetric error bars from ``low`` to ``high`` (NaN bounds: no bar)."""
    plus, minus = np.nan_to_num(high - mean), np.nan_to_num(mean - low)
    return {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus, "visible": True,
            "thickness": 1.5, "width": 5, "color": color}


def arm_bars(summary: Any, colors: Mapping[str, str] | None = None, *, subsets: Sequence[str] | None = None,
             y_title: str = "accuracy (%)") -> go.Figure:
    """Each arm's mean over its seeds per subset, with the 95% confidence interval as error bars.

    Args:
        summary: ``fer_core.compare.arm_metrics`` output (``arm``, ``subset``, ``n``, ``mean``, ``low``, ``high``),
            0-1 fractions; the interval is drawn clipped to 0-100%, and an arm with one run has no bar.
        colors: ``{arm label: colour}`` (default :func:`run_colors`).
        subsets: the subsets in display order (default as they come).
        y_title: the metric, for the axis title.
    """
    arms = list(dict.fromkeys(summary["arm"]))
    colors = colors or run_colors(arms)
    order = list(subsets) if subsets is not None else list(dict.fromkeys(summary["subset"]))
    fig = go.Figure()
    for arm in arms:
        rows = summary[summary["arm"] == arm].set_index("subset").reindex(order)
        mean = 100.0 * rows["mean"].to_numpy(dtype=float)
        low = 100.0 * rows["low"].to_numpy(dtype=float).clip(0.0, 1.0)
        high = 100.0 * rows["high"].to_numpy(dtype=float).clip(0.0, 1.0)
        n = rows["n"].fillna(0).to_numpy(dtype=int)
        color = colors.get(arm, TRAIN_COLOR)
        interval = [f"95% CI {lo:.1f} to {hi:.1f}%" if k > 1 and np.isfinite(lo) else
                    "one run: no interval" if k == 1 else "no result"
                    for lo, hi, k in zip(100.0 * rows["low"].to_numpy(dtype=float),
                                         100.0 * rows["high"].to_numpy(dtype=float), n, strict=True)]
        fig.add_trace(go.Bar(
            x=order, y=mean, name=str(arm), marker_color=color, error_y=_interval_bars(mean, low, high, "#5f6368"),
            customdata=np.column_stack([n, interval]),
            hovertemplate=f"{arm} · %{{x}}<br>mean %{{y:.1f}}% over %{{customdata[0]}} run(s)<br>%{{customdata[1]}}"
            "<extra></extra>",
        ))
    top = float(np.nanmax(100.0 * summary["high"].to_numpy(dtype=float).clip(0.0, 1.0), initial=0.0))
    top = max(top, float(np.nanmax(100.0 * summary["mean"].to_numpy(dtype=float), initial=0.0)))
    fig.update_yaxes(title_text=y_title, ticksuffix="%", range=[0, min(100.0, top + 5.0) if top else 100.0])
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=order)
    fig.update_layout(barmode="group", bargap=0.25, height=380, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      legend={**_legend_above(), "title": "arm"}, hovermode="closest")
    return fig


def paired_differences(comparisons: Any, colors: Mapping[str, str] | None = None, *,
                       subsets: Sequence[str] | None = None) -> go.Figure:
    """Differences between arms per subset (B − A, percentage points) with their 95% bootstrap interval: a filled
    marker labelled with the p-value where the paired test supports the difference, a hollow one labelled "n.s."
    where it does not.

    Args:
        comparisons: ``fer_core.compare.arm_comparisons`` rows (``a``, ``b``, ``subset``, ``difference``, ``low``,
            ``high``, ``p_value``, ``supported``); rows that could not be paired are left out.
        colors: ``{arm label: colour}`` of arm B (default :func:`run_colors`).
        subsets: the subsets in display order (default as they come).
    """
    from fer_core.compare import format_p  # plain formatting shared with the page's table

    data = comparisons[comparisons["difference"].notna()] if len(comparisons) else comparisons
    order = list(subsets) if subsets is not None else list(dict.fromkeys(data["subset"]))
    colors = colors or run_colors(list(dict.fromkeys(data["b"])))
    pairs = list(dict.fromkeys(zip(data["a"], data["b"], strict=True)))
    fig = go.Figure()
    for a, b in pairs:
        rows = data[(data["a"] == a) & (data["b"] == b)].set_index("subset").reindex(order)
        rows = rows.dropna(subset=["difference"])
        d, low, high = (100.0 * rows[c].to_numpy(dtype=float) for c in ("difference", "low", "high"))
        marked = rows["supported"].astype(bool).to_numpy()
        color = colors.get(b, TRAIN_COLOR)
        label = [f"{'▲' if v > 0 else '▼'} {format_p(p)}" if m else "n.s."
                 for v, p, m in zip(d, rows["p_value"], marked, strict=True)]
        fig.add_trace(go.Scatter(
            x=list(rows.index), y=d, name=f"{b} − {a}", mode="markers+text", text=label,
            textposition="middle right", textfont={"size": 11},
            marker={"size": 11, "color": color, "symbol": ["circle" if m else "circle-open" for m in marked],
                    "line": {"width": 2, "color": color}},
            error_y=_interval_bars(d, low, high, color),
            customdata=np.column_stack([low, high, rows["p_value"].to_numpy(dtype=float)]),
            hovertemplate=f"{b} − {a} · %{{x}}<br>%{{y:+.1f}} pp, 95% CI %{{customdata[0]:+.1f}} to "
            "%{customdata[1]:+.1f}<br>p = %{customdata[2]:.3g}<extra></extra>",
        ))
    fig.add_hline(y=0, line_color="#5f6368", line_width=1)
    # room on the right of the last subset for its label
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=order, range=[-0.5, len(order) - 0.2])
    fig.update_yaxes(title_text="difference B − A (percentage points)", ticksuffix=" pp", zeroline=False)
    fig.update_layout(height=360, margin={"l": 10, "r": 10, "t": 30, "b": 10}, hovermode="closest",
                      legend={**_legend_above(), "title": "B − A"}, showlegend=True)
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


# --------------------------------------------------------------------------------------------- probabilities
def probabilities(probs: Mapping[str, float], *, highlight: str | None = None, truth: str | None = None,
                  title: str | None = None, name: str = "model", reference: Mapping[str, float] | None = None,
                  reference_name: str = "reference") -> go.Figure:
    """A model's class probabilities for one face as horizontal bars, in the model's class order (first on top).

    Args:
        probs: ``{class name: probability (0-1)}``.
        highlight: a class drawn in the second colour (e.g. the class being explained).
        truth: the face's true class, if known: its bar is outlined and its label says "(true)".
        title: figure title.
        name: the model's name (the legend's, when there is a reference).
        reference: another distribution to draw beside the model's, in grey (e.g. a generator's soft label);
            its classes the model lacks follow the model's.
        reference_name: its name in the legend.

    With more than :data:`MANY_CLASSES` classes (an identity model) only the most probable ones are drawn (and the
    highlighted and true class), in the model's order.
    """
    if len(probs) > MANY_CLASSES:
        top = set(sorted(probs, key=lambda c: -float(probs[c]))[:MANY_CLASSES]) | {highlight, truth}
        probs = {c: p for c, p in probs.items() if c in top}
        title = title or f"The {len(probs)} most probable classes"
    names = list(probs) + [c for c in reference or {} if c not in probs]
    values = [100.0 * float(probs[c]) if c in probs else None for c in names]
    colors = [VAL_COLOR if c == highlight else TRAIN_COLOR for c in names]
    fig = go.Figure(go.Bar(
        x=values, y=names, orientation="h", name=name, marker={"color": colors, "line": {
            "color": ["#202124" if c == truth else "rgba(0,0,0,0)" for c in names], "width": 2}},
        text=[_percent(v) + (" (true)" if c == truth else "") for v, c in zip(values, names, strict=True)],
        textposition="outside", cliponaxis=False, hovertemplate=f"{name}<br>%{{y}}: %{{x:.2f}}%<extra></extra>",
        showlegend=reference is not None,
    ))
    if reference is not None:
        ref = [100.0 * float(reference[c]) if c in reference else None for c in names]
        fig.add_trace(go.Bar(
            x=ref, y=names, orientation="h", name=reference_name, marker_color=REFERENCE_COLOR,
            text=[_percent(v) for v in ref], textposition="outside", cliponaxis=False,
            hovertemplate=f"{reference_name}<br>%{{y}}: %{{x:.2f}}%<extra></extra>",
        ))
    fig.update_yaxes(autorange="reversed", categoryorder="array", categoryarray=names)
    fig.update_xaxes(title_text="probability (%)", range=[0, 115], ticksuffix="%", dtick=25)
    fig.update_layout(title=title, height=(90 + 34 * len(names)) if reference is None else (140 + 40 * len(names)),
                      bargap=0.3 if reference is None else 0.2, barmode="group",
                      margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
                      legend=_legend_below(-0.15))
    return fig


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}%"


# --------------------------------------------------------------------------------------------- data sets
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


# --------------------------------------------------------------------------------------------- SCN
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


SEARCH_STATE_COLORS = {"complete": "#2a9d8f", "pruned": "#e9c46a", "failed": "#e76f51", "running": "#8d99ae",
                       "waiting": "#8d99ae"}


def search_trials(trials: Sequence[Mapping[str, Any]], *, objective: str = "best validation accuracy") -> go.Figure:
    """A search's trials in order: the objective of each complete trial, the best value a pruned or failed one had
    reached, coloured by state, with the best-so-far line over the complete trials.

    Args:
        trials: ``fer_core.search.search_summary(...)["trials"]`` rows (``trial``, ``state``, ``value``, params).
        objective: its name, for the axis.
    """
    fig = go.Figure()
    params = [k for k in (trials[0] if trials else {}) if k not in ("trial", "run_id", "state", "value", "epochs")]
    for state, color in SEARCH_STATE_COLORS.items():
        rows = [t for t in trials if t["state"] == state and t["value"] is not None]
        if not rows:
            continue
        text = ["<br>".join(f"{k} = {t.get(k)}" for k in params) for t in rows]
        fig.add_trace(go.Scatter(
            x=[t["trial"] for t in rows], y=[100.0 * t["value"] for t in rows], mode="markers", name=state,
            marker={"color": color, "size": 10, "symbol": "circle" if state == "complete" else "x"},
            customdata=np.column_stack([text, [t.get("run_id") or "" for t in rows], [t["epochs"] for t in rows]]),
            hovertemplate=f"trial %{{x}} · {state}<br>%{{y:.1f}}% after %{{customdata[2]}} epoch(s)"
                          "<br>%{customdata[1]}<br>%{customdata[0]}<extra></extra>"))
    complete = sorted((t for t in trials if t["state"] == "complete" and t["value"] is not None),
                      key=lambda t: t["trial"])
    if complete:
        best = np.maximum.accumulate([100.0 * t["value"] for t in complete])
        fig.add_trace(go.Scatter(x=[t["trial"] for t in complete], y=best, mode="lines", name="best so far",
                                 line={"color": "#264653", "shape": "hv", "width": 1.5}, hoverinfo="skip"))
    fig.update_xaxes(title_text="trial", dtick=1 if len(trials) <= 20 else None)
    fig.update_yaxes(title_text=f"{objective} (%)", ticksuffix="%")
    fig.update_layout(height=340, margin={"l": 10, "r": 10, "t": 30, "b": 10}, legend=_legend_above(),
                      hovermode="closest")
    return fig


def param_importance(importance: Mapping[str, float]) -> go.Figure:
    """Each searched parameter's share of the objective's variance (fANOVA), largest on top."""
    items = sorted(importance.items(), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(x=[100.0 * v for _, v in items], y=[k for k, _ in items], orientation="h",
                           marker_color=TRAIN_COLOR, hovertemplate="%{y}: %{x:.0f}%<extra></extra>"))
    fig.update_xaxes(title_text="importance (% of the objective's variance, fANOVA)", ticksuffix="%",
                     range=[0, 100])
    fig.update_layout(height=90 + 40 * len(items), margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return fig


# --- calibration
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


# --- factors and probes
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


# --- batch predictions
def predicted_class_counts(per_class: Mapping[str, int], *, title: str | None = None) -> go.Figure:
    """Faces per predicted (top) class of a batch of photos (``fer_core.batch_predict.summarize``'s ``per_class``),
    as vertical bars in the model's class order, every class shown (zero included); :func:`class_counts` is the
    data sets' per-split version."""
    names, counts = list(per_class), [int(per_class[c]) for c in per_class]
    total = sum(counts)
    fig = go.Figure(go.Bar(
        x=names, y=counts, marker_color=TRAIN_COLOR, text=counts, textposition="outside",
        customdata=[100.0 * n / total if total else 0.0 for n in counts],
        hovertemplate="%{x}: %{y} face(s), %{customdata:.1f}%<extra></extra>",
    ))
    fig.update_xaxes(title_text="top class", type="category")
    fig.update_yaxes(title_text="faces", rangemode="tozero", dtick=1 if max(counts, default=0) <= 10 else None)
    fig.update_layout(title=title or f"Faces per top class ({total} in all)", height=340, showlegend=False,
                      margin={"l": 10, "r": 10, "t": 48, "b": 10})
    return fig


# --- videos
CLASS_COLORS = {"neutral": "#7f8c8d", "happy": "#e6a700", "sad": "#3b6fd8", "surprise": "#17becf", "fear": "#8e44ad",
                "disgust": "#2e8b57", "anger": "#c0392b", "contempt": "#8c564b"}
"""One colour per expression class (``fer_core.labels.CLASSES``), the same on every chart that colours by class."""
TIME_MARKER_COLOR = "#202124"


def class_colors(names: Sequence[str]) -> dict[str, str]:
    """A colour per class name: :data:`CLASS_COLORS` for the expression classes, :data:`RUN_PALETTE` in order for
    any other name (an identity model's)."""
    others = [n for n in names if n not in CLASS_COLORS]
    return {n: CLASS_COLORS.get(n) or RUN_PALETTE[others.index(n) % len(RUN_PALETTE)] for n in names}


def _with_gaps(frames: np.ndarray, *columns: np.ndarray) -> list[np.ndarray]:
    """The columns with a NaN inserted wherever ``frames`` jumps by more than one, so a line breaks there."""
    breaks = np.flatnonzero(np.diff(frames) > 1) + 1
    return [np.insert(np.asarray(c, dtype=float), breaks, np.nan) for c in columns]


def video_timeline(df: Any, face_id: int, *, time_s: float | None = None, truth: Any = None,
                   x_range: tuple[float, float] | None = None, title: str | None = None) -> go.Figure:
    """One tracked face of a video over time: each class's smoothed probability as a line, the class on top of
    each frame alone (before smoothing) as faint dots at its probability, a dotted vertical line at ``time_s``, and
    breaks where the face is not seen.

    Args:
        df: a video table (``fer_core.video.predict_video``: ``frame``, ``time_s``, ``face_id``, ``prob_<class>``,
            ``top``, ``smooth_<class>``, ``status``).
        face_id: the face to draw.
        time_s: the selected time (the frame shown beside the chart), or None.
        truth: ``fer_core.video.match_truth``'s table, or None: the face's true class per frame is drawn as a band
            of squares in the class's colour above the lines, and the title gives the share of frames that agree.
        x_range: the time axis (default: the whole table), so that every face's chart lines up.
        title: figure title (default: the face, and its agreement with the truth).
    """
    names = [c.removeprefix("prob_") for c in df.columns if c.startswith("prob_")]
    colors = class_colors(names)
    face = df[(df["status"] == "ok") & (df["face_id"] == face_id)].sort_values("frame")
    frames = face["frame"].to_numpy(int)
    fig = go.Figure()
    for name in names:
        t, smooth = _with_gaps(frames, face["time_s"].to_numpy(float), 100.0 * face[f"smooth_{name}"].to_numpy(float))
        fig.add_trace(go.Scatter(
            x=t, y=smooth, mode="lines", name=name, legendgroup=name, connectgaps=False,
            line={"color": colors[name], "width": 2},
            hovertemplate=f"{name}, smoothed: %{{y:.0f}}% at %{{x:.2f}} s<extra></extra>"))
        raw = face[face["top"] == name]
        if len(raw):
            fig.add_trace(go.Scatter(
                x=raw["time_s"], y=100.0 * raw[f"prob_{name}"], mode="markers", name=f"{name} (frame alone)",
                legendgroup=name, showlegend=False, marker={"color": colors[name], "size": 5, "opacity": 0.4},
                customdata=raw["frame"],
                hovertemplate=f"frame %{{customdata}}: {name} on top, %{{y:.0f}}% (this frame alone)<extra></extra>"))
    band = 108.0
    agreement = None
    if truth is not None:
        mine = truth[(truth["face_id"] == face_id) & truth["truth"].notna()]
        for name in dict.fromkeys(mine["truth"]):
            part = mine[mine["truth"] == name]
            fig.add_trace(go.Scatter(
                x=part["time_s"], y=np.full(len(part), band), mode="markers", name=f"truth: {name}",
                legendgroup="truth", showlegend=False,
                marker={"color": colors.get(name, REFERENCE_COLOR), "size": 7, "symbol": "square"},
                customdata=part["frame"], hovertemplate=f"frame %{{customdata}}: true class {name}<extra></extra>"))
        if len(mine):
            agreement = (float(mine["smooth_agree"].mean()), float(mine["agree"].mean()))
            fig.add_annotation(x=0, xref="paper", y=band, yref="y", text="truth", showarrow=False, xanchor="right",
                               font={"size": 11, "color": "#5f6368"})
    if time_s is not None:
        fig.add_vline(x=float(time_s), line={"color": TIME_MARKER_COLOR, "dash": "dot", "width": 1.5})
    if x_range is None:
        x_range = (float(df["time_s"].min()), float(df["time_s"].max()))
    if title is None:
        title = f"Face {face_id}"
        if agreement is not None:
            title += (f" · smoothed class = true class in {100 * agreement[0]:.0f}% of its frames "
                      f"({100 * agreement[1]:.0f}% frame by frame)")
    fig.update_xaxes(title_text="time (s)", range=[x_range[0], x_range[1] + 1e-6])
    fig.update_yaxes(title_text="probability (%)", range=[0, 114 if truth is not None else 102], ticksuffix="%",
                     tickvals=[0, 25, 50, 75, 100])
    fig.update_layout(title=title, height=300, hovermode="closest", legend=_legend_below(-0.3),
                      margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig
