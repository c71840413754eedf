"""A model's predictions: one face's class probabilities, and the faces per top class of a batch of photos."""

from __future__ import annotations

from collections.abc import Mapping

import plotly.graph_objects as go

from app.charts.common import MANY_CLASSES, REFERENCE_COLOR, TRAIN_COLOR, VAL_COLOR, _legend_below


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


def predicted_class_counts(per_class: Mapping[str, int], *, title: str | None = None) -> go.Figure:
    """Faces per predicted (top) class of a batch of photos (``fer_core.batch_predict.summarize``'s ``per_class``),
    as vertical bars in the model's class order, every class shown (zero included);
    :func:`~app.charts.data.class_counts` is the data sets' per-split version."""
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
