"""Videos: one colour per expression class, and a tracked face's class probabilities over time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from app.charts.common import REFERENCE_COLOR, RUN_PALETTE, _legend_below

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
