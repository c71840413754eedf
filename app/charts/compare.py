"""Charts of groups of runs: a metric against a swept value, arms' means with their confidence intervals, paired
differences between arms, and a hyperparameter search's trials and parameter importances."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.charts.common import TRAIN_COLOR, _interval_bars, _legend_above, run_colors

SUBSET_COLORS = {"all": "#202124", "clean": "#7f8c8d", "occlusion": "#c0392b", "pose30": "#3b6fd8",
                 "pose45": "#8e44ad", "ambiguous": "#e8710a"}
"""One colour per evaluation subset, the same on every sweep chart."""


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
