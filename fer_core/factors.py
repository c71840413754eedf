"""Where a model breaks on SynthFACS: accuracy per bin of each factor the generator knows for every face.

SynthFACS draws every face from parameters (:class:`~fer_core.data.synthfaces.dataset.SampleMeta`), so each test
face comes with its head pose, occluder, expression intensity, light, blur, noise and JPEG quality. Evaluation on a
SynthFACS split writes accuracy per bin of each factor, with counts and a 95% Wilson interval, next to the other
``eval/`` results::

    eval/factors/<split>.json          {"split", "n", "accuracy", "factors": {name: {..., "bins": [...]}}}
    eval/factors/<split>_values.csv    index, label, pred, correct and one column per factor (per face)

(in a folder of their own: ``eval/*.json`` are the split/subset results :func:`fer_core.io.read_eval` reads).
Other data sets have no such parameters: for them nothing is written. The values, bins and intervals are plain
functions of metas and correctness, so they are checked on hand-made inputs::

    values = factor_values(metas)                       # DataFrame, one row per face, one column per factor
    table = accuracy_by_factor(values, correct)         # {factor: {"bins": [{"bin", "n", "accuracy", ...}]}}

**The factors and their bins** (:data:`FACTORS`, the one table the JSON, the CLI and the app follow):

=========  ============================================================  =========================================
factor     value of a face                                               bins
=========  ============================================================  =========================================
yaw        head turn, degrees (0: frontal)                               15° wide from -60 to 60
pitch      head nod, degrees                                             10° wide from -20 to 20
roll       head tilt, degrees                                            10° wide from -15 to 15
occluder   what covers part of the face (``OCCLUDERS``)                  one per kind, ``none`` first
intensity  overall expression intensity the generator drew (0-1)         [0, 0.3), then 0.1 wide to 1.0
light      angle of the key light off the camera axis, degrees (0: lit   10° wide from 0 to 50
           from the front, flat; larger: from the side, deeper shadows)
ambient    ambient share of the light (lower: darker shadows)            0.05 wide from 0.45 to 0.70
blur       Gaussian blur sigma in pixels at 112 px                       ``none`` (0), then 0.2 wide from 0.2 to 1.0
noise      sensor noise standard deviation, grey levels                  1.5 wide from 0 to 6
jpeg       JPEG quality of the round trip                                ``none`` (no JPEG), then 20 wide 35-95
=========  ============================================================  =========================================

The outer numeric bins span SynthFACS's own ranges (``sample_meta``) and also take any value beyond them. A neutral
face moves no action unit, so its intensity (drawn but never shown) is not applicable: such faces are counted in the
factor's ``not_applicable`` instead of a bin, and bins plus ``not_applicable`` always add up to the split.

Intervals are Wilson score intervals of a binomial proportion (``scipy.stats.binomtest(...).proportion_ci``), which
stay inside [0, 1] and behave at 0 or n correct, unlike the normal approximation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fer_core import io
from fer_core.data.synthfaces.dataset import SampleMeta, SynthFaces
from fer_core.data.synthfaces.render import OCCLUDERS

CONFIDENCE = 0.95
FOLDER = "factors"
"""Sub-folder of a run's ``eval/`` with the factor files."""


@dataclass(frozen=True)
class Factor:
    """One factor of a SynthFACS face and how it is binned.

    Attributes:
        name: the key in files and on the command line.
        title: what the axis of a chart says.
        unit: the unit of the value ("" for none).
        value: the factor's value for one face (None: not applicable to that face).
        edges: numeric bins ``[edges[i], edges[i+1])`` (the last one closed), the outer bins open beyond the ends;
            empty for a categorical factor.
        categories: a categorical factor's values in display order.
        zero_bin: for a numeric factor, the name of a bin of its own for the value 0 (the nuisance is off).
        note: one line on what the value means, for captions and ``--help``.
    """

    name: str
    title: str
    unit: str
    value: Callable[[SampleMeta], float | str | None]
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()
    zero_bin: str | None = None
    note: str = ""

    @property
    def numeric(self) -> bool:
        return not self.categories

    def bins(self) -> list[dict[str, Any]]:
        """The bins: ``bin`` (its label), ``low``, ``high`` (None for a category) and ``x`` (where a chart puts it)."""
        if not self.numeric:
            return [{"bin": c, "low": None, "high": None, "x": c} for c in self.categories]
        out = [{"bin": self.zero_bin, "low": 0.0, "high": 0.0, "x": 0.0}] if self.zero_bin else []
        for low, high in zip(self.edges[:-1], self.edges[1:], strict=True):
            out.append({"bin": f"{_num(low)} to {_num(high)}", "low": low, "high": high, "x": (low + high) / 2})
        return out

    def assign(self, values: Sequence[Any]) -> np.ndarray:
        """The bin number of each value (-1: not applicable)."""
        if not self.numeric:
            index = {c: i for i, c in enumerate(self.categories)}
            return np.array([index.get(v, -1) if v is not None else -1 for v in values], dtype=np.int64)
        x = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        inner = np.asarray(self.edges[1:-1], dtype=np.float64)
        out = np.searchsorted(inner, x, side="right").astype(np.int64)  # right-closed last bin: by construction
        if self.zero_bin:
            out = np.where(x == 0, 0, out + 1)
        return np.where(np.isnan(x), -1, out)


def _num(value: float) -> str:
    return f"{value:g}"


def _light_angle(meta: SampleMeta) -> float:
    lx, ly, lz = meta.spec.nuisance.light
    return math.degrees(math.atan2(math.hypot(lx, ly), lz))


def _intensity(meta: SampleMeta) -> float | None:
    return float(meta.intensity) if np.any(meta.spec.au > 0) else None  # a neutral face moves no action unit


FACTORS: dict[str, Factor] = {f.name: f for f in (
    Factor("yaw", "yaw (°)", "°", lambda m: float(m.spec.yaw), edges=(-60, -45, -30, -15, 0, 15, 30, 45, 60),
           note="head turn left/right in degrees"),
    Factor("pitch", "pitch (°)", "°", lambda m: float(m.spec.pitch), edges=(-20, -10, 0, 10, 20),
           note="head nod up/down in degrees"),
    Factor("roll", "roll (°)", "°", lambda m: float(m.spec.roll), edges=(-15, -5, 5, 15),
           note="head tilt in degrees"),
    Factor("occluder", "occluder", "", lambda m: m.spec.occluder, categories=OCCLUDERS,
           note="what covers part of the face"),
    Factor("intensity", "expression intensity", "", _intensity, edges=(0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
           note="overall expression intensity drawn by the generator (not applicable to neutral faces)"),
    Factor("light", "light angle (°)", "°", _light_angle, edges=(0, 10, 20, 30, 40, 50),
           note="angle of the key light off the camera axis (0: from the front; larger: deeper side shadows)"),
    Factor("ambient", "ambient light", "", lambda m: float(m.spec.nuisance.ambient),
           edges=(0.45, 0.5, 0.55, 0.6, 0.65, 0.7), note="ambient share of the light (lower: darker shadows)"),
    Factor("blur", "blur sigma (px at 112)", "px", lambda m: float(m.spec.nuisance.blur),
           edges=(0.2, 0.4, 0.6, 0.8, 1.0), zero_bin="none", note="Gaussian blur sigma in pixels at 112 px (0: sharp)"),
    Factor("noise", "sensor noise (grey levels)", "", lambda m: float(m.spec.nuisance.noise),
           edges=(0, 1.5, 3, 4.5, 6), note="standard deviation of the sensor noise in grey levels"),
    Factor("jpeg", "JPEG quality", "", lambda m: float(m.spec.nuisance.jpeg), edges=(35, 55, 75, 95),
           zero_bin="none", note="quality of the JPEG round trip (none: no JPEG)"),
)}
"""Every factor, in display order (see the module docstring's table)."""


def check_factor(name: str) -> Factor:
    """The factor called ``name``; a ValueError that lists the valid ones otherwise."""
    if name not in FACTORS:
        raise ValueError(f"unknown factor {name!r}; valid: {', '.join(FACTORS)}")
    return FACTORS[name]


# --------------------------------------------------------------------------------------------- values and bins
def synthfaces_metas(ds: Any) -> list[SampleMeta] | None:
    """Every sample's SynthFACS parameters in the data set's order, or None when ``ds`` is not SynthFACS."""
    if not isinstance(ds, SynthFaces):
        return None
    return [ds.meta(i) for i in range(len(ds))]


def factor_values(metas: Sequence[SampleMeta], factors: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per face, one column per factor (None where the factor does not apply to the face)."""
    chosen = [check_factor(name) for name in (factors or FACTORS)]
    return pd.DataFrame({f.name: pd.Series([f.value(m) for m in metas], dtype=object) for f in chosen})


def wilson_interval(correct: int, n: int, confidence: float = CONFIDENCE) -> tuple[float | None, float | None]:
    """Wilson score interval of the proportion ``correct / n`` (``(None, None)`` for n = 0)."""
    from scipy.stats import binomtest

    if n == 0:
        return None, None
    ci = binomtest(int(correct), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def accuracy_by_factor(values: pd.DataFrame, correct: Sequence[bool] | np.ndarray,
                       confidence: float = CONFIDENCE) -> dict[str, dict[str, Any]]:
    """Accuracy per bin of every factor column of ``values`` (see :data:`FACTORS`).

    Returns:
        ``{factor: {"title", "unit", "numeric", "note", "bins": [{"bin", "low", "high", "x", "n", "correct",
        "accuracy", "ci_low", "ci_high"}], "not_applicable": {"n", "correct", "accuracy"}}}``; an empty bin has
        ``n`` 0 and None accuracy and interval.
    """
    correct = np.asarray(correct, dtype=bool)
    if len(correct) != len(values):
        raise ValueError(f"{len(values)} faces have factor values but {len(correct)} have a correctness")
    out = {}
    for name in values.columns:
        factor = check_factor(name)
        assigned = factor.assign(values[name].tolist())
        bins = []
        for k, spec in enumerate(factor.bins()):
            hit = assigned == k
            bins.append({**spec, **_accuracy(correct[hit], confidence)})
        missing = assigned < 0
        out[name] = {"title": factor.title, "unit": factor.unit, "numeric": factor.numeric, "note": factor.note,
                     "bins": bins, "not_applicable": {k: v for k, v in _accuracy(correct[missing], confidence).items()
                                                      if k in ("n", "correct", "accuracy")}}
    return out


def _accuracy(correct: np.ndarray, confidence: float) -> dict[str, Any]:
    n, k = int(correct.size), int(correct.sum())
    low, high = wilson_interval(k, n, confidence)
    return {"n": n, "correct": k, "accuracy": k / n if n else None, "ci_low": low, "ci_high": high}


# --------------------------------------------------------------------------------------------- eval files
def factors_paths(run_dir: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """``eval/factors/<split>.json`` and ``eval/factors/<split>_values.csv`` of a run."""
    folder = Path(run_dir) / "eval" / FOLDER
    return folder / f"{split}.json", folder / f"{split}_values.csv"


def write_factors(run_dir: str | os.PathLike, split: str, ds: Any, labels: Any, logits: Any) -> dict | None:
    """Write the factor files of one evaluated split from its ``all`` logits; None (nothing written) when the data
    set is not SynthFACS.

    Args:
        run_dir: the run folder.
        split: the split's name.
        ds: the split's data set (``all``, in the order of ``labels`` and ``logits``).
        labels: the labels evaluation scored against (a tensor or array).
        logits: the model's logits on the split (``N x C``).
    """
    metas = synthfaces_metas(ds)
    if metas is None:
        return None
    labels = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels, dtype=np.int64)
    preds = np.asarray(logits.argmax(1).cpu() if hasattr(logits, "cpu") else np.argmax(logits, 1), dtype=np.int64)
    if not len(metas) == len(labels) == len(preds):
        raise ValueError(f"{split}: {len(metas)} faces, {len(labels)} labels and {len(preds)} predictions differ")
    values = factor_values(metas)
    correct = preds == labels
    result = {"split": split, "n": len(labels), "accuracy": float(correct.mean()) if len(labels) else None,
              "confidence": CONFIDENCE, "interval": "wilson", "factors": accuracy_by_factor(values, correct)}
    json_path, csv_path = factors_paths(run_dir, split)
    table = pd.concat([pd.DataFrame({"index": np.arange(len(labels)), "label": labels, "pred": preds,
                                     "correct": correct}), values], axis=1)
    io.atomic_write_text(csv_path, table.to_csv(index=False, float_format="%.4f"))
    io.atomic_write_json(json_path, result)
    return result


def read_factors(run_dir: str | os.PathLike, split: str = "test") -> dict | None:
    """A run's factor accuracies on ``split`` (:func:`write_factors`), or None when it has none."""
    import json

    path = factors_paths(run_dir, split)[0]
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def factor_frame(results: dict[str, dict], factor: str) -> pd.DataFrame:
    """One factor's bins of several runs as one table (for charts and the CLI).

    Args:
        results: ``{run label: read_factors(...) result}``.
        factor: the factor's name.

    Returns:
        Columns ``run``, ``bin``, ``x``, ``n``, ``accuracy``, ``ci_low``, ``ci_high`` (0-1 fractions), in bin order.
    """
    check_factor(factor)
    rows = []
    for label, result in results.items():
        part = (result.get("factors") or {}).get(factor)
        if part is None:
            continue
        rows += [{"run": label, **{k: b.get(k) for k in ("bin", "x", "n", "accuracy", "ci_low", "ci_high")}}
                 for b in part["bins"]]
    return pd.DataFrame(rows, columns=["run", "bin", "x", "n", "accuracy", "ci_low", "ci_high"])


__all__ = ["FACTORS", "Factor", "CONFIDENCE", "check_factor", "synthfaces_metas", "factor_values",
           "wilson_interval", "accuracy_by_factor", "factors_paths", "write_factors", "read_factors",
           "factor_frame"]

