"""Comparing runs and drilling into their predictions: the logic behind the app's Compare and Confusion pages.

Everything here works on plain data read through :mod:`fer_core.io` (configs, ``eval/`` results, prediction tables,
run summaries), so the pages only draw::

    from fer_core import compare, io
    differing, equal = compare.config_differences({label: io.read_config(d) for label, d in runs.items()})
    table = compare.metrics_table({label: io.read_eval(d) for label, d in runs.items()})     # runs x subsets
    compare.best_per_column(table)                                                           # what to set in bold
    keys = compare.swept_keys([r["tags"] for r in io.list_runs(group="my-sweep")])
    faces = compare.cell_samples(io.read_predictions(run_dir, "test", "all"), true=4, pred=3)  # fear taken for surprise

A *sweep group* is the set of runs sharing ``config.group`` (see :mod:`fer_core.sweep`); each run's ``tags`` hold the
values it was started with.

Runs whose configs differ only by ``seed`` (and by name, group and tags) are one *arm*: repeats of one configuration.
Arms are summarised by the mean over seeds with its 95% interval and compared with the paired tests of
:mod:`fer_core.stats` on the same test faces; a difference counts only when that test supports it::

    arms = compare.group_arms(runs, [io.read_config(r["path"]) for r in runs])      # [Arm(label, run_ids, paths...)]
    summary = compare.arm_metrics(arms, {r["run_id"]: io.read_eval(r["path"]) for r in runs})   # mean, low, high, n
    tests = compare.arm_comparisons({a.label: a.paths for a in arms})              # B - A per pair and subset
    compare.difference_table(tests)                                                  # "+3.2 pp ▲ p = 0.004" / "n.s."
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fer_core import io, stats
from fer_core.config import format_value
from fer_core.labels import SUBSETS

IGNORED_KEYS = ("name", "group", "tags")
"""Config keys left out of :func:`config_differences`: they name a run rather than change what it trains."""

MISSING = "(not set)"
"""How :func:`config_differences` shows a key that one run's config does not have."""

SEED_KEY = "seed"
"""The tag that, when it varies within a group, means repeated runs to average over."""


# --------------------------------------------------------------------------------------------- configs and tags
def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{dotted key: value}``; lists and empty dicts are values, not descended into."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def config_differences(configs: Mapping[str, Mapping[str, Any]], ignore: Iterable[str] = IGNORED_KEYS
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Which config keys differ between runs.

    Args:
        configs: ``{run label: config dict}`` (``io.read_config``), in display order.
        ignore: top-level keys to leave out (with everything under them).

    Returns:
        ``(differing, equal)``: ``differing`` has one row per key whose value is not the same in every run (a key
        that only some runs have counts as differing, shown as :data:`MISSING`), indexed by the dotted key, one
        column per run, values as short text; ``equal`` has columns ``key`` and ``value`` for the rest. Both are
        sorted by key.
    """
    ignored = tuple(ignore)
    flat = {label: {k: v for k, v in flatten(cfg).items() if k.split(".", 1)[0] not in ignored}
            for label, cfg in configs.items()}
    keys = sorted({k for f in flat.values() for k in f})
    differing, equal = {}, []
    for key in keys:
        values = [f.get(key, MISSING) for f in flat.values()]
        shown = [v if v is MISSING else format_value(v) for v in values]
        if len(set(shown)) > 1:
            differing[key] = shown
        else:
            equal.append({"key": key, "value": shown[0]})
    diff = pd.DataFrame.from_dict(differing, orient="index", columns=list(flat))
    diff.index.name = "key"
    return diff, pd.DataFrame(equal, columns=["key", "value"])


def _tag_values(tags: Sequence[Mapping[str, Any]], key: str) -> list[str]:
    return [format_value(t.get(key)) if key in t else MISSING for t in tags]


def swept_keys(tags: Sequence[Mapping[str, Any]]) -> list[str]:
    """The tag keys that vary within a group of runs, leaving out those another kept key already determines.

    An ablation tags each run with ``variant`` and the variant's own overrides (``model.name``...), which change
    exactly when the variant does; only ``variant`` is kept. A key missing from a run counts as a value of its own.

    Args:
        tags: each run's ``tags`` (``config.tags``), e.g. ``[{"variant": "scn", "model.name": "scn", "seed": 0}...]``.

    Returns:
        The varying keys in the order they first appear in the tags.
    """
    order: list[str] = []
    for t in tags:
        order += [k for k in t if k not in order]
    kept: list[str] = []
    for key in order:
        values = _tag_values(tags, key)
        if len(set(values)) < 2:
            continue
        determined = False
        for other in kept:
            mapping: dict[str, str] = {}
            for o, v in zip(_tag_values(tags, other), values, strict=True):
                if mapping.setdefault(o, v) != v:
                    break
            else:
                determined = True
                break
        if not determined:
            kept.append(key)
    return kept


def short_labels(runs: Sequence[Mapping[str, Any]], configs: Sequence[Mapping[str, Any]] | None = None) -> list[str]:
    """Short, unique names for runs in legends and tables.

    In order of preference: the swept tags that tell the runs apart (``scn, label_noise=0.1``; a ``variant`` is
    shown by its value alone; a run with none of them goes by its id), the runs' config names when those are
    unique, the first two config values that differ (``lr=0.01, epochs=4``), and else the run ids. Names still
    equal get the run id appended.

    Args:
        runs: run summaries (``io.list_runs`` rows: ``run_id``, ``name``, ``tags``).
        configs: the runs' configs, for the third choice (optional).
    """
    if not runs:
        return []
    tags = [r.get("tags") or {} for r in runs]
    keys = swept_keys(tags)
    if keys:
        # a run with none of the swept tags (e.g. one trained alone, compared with a sweep's) goes by its id
        labels = [", ".join(_short_pair(k, t.get(k), k in t) for k in keys) if any(k in t for k in keys)
                  else str(r["run_id"]) for t, r in zip(tags, runs, strict=True)]
    elif len({r.get("name") for r in runs}) == len(runs) and all(r.get("name") for r in runs):
        labels = [str(r["name"]) for r in runs]
    elif configs is not None and len(configs) == len(runs) and len(runs) > 1:
        differing, _ = config_differences({str(i): c for i, c in enumerate(configs)})
        picked = list(differing.index[:2])
        labels = [", ".join(f"{k.rsplit('.', 1)[-1]}={differing.loc[k, str(i)]}" for k in picked) or r["run_id"]
                  for i, r in enumerate(runs)]
    else:
        labels = [r["run_id"] for r in runs]
    counts = pd.Series(labels).value_counts()
    return [f"{label} ({r['run_id']})" if counts[label] > 1 else label for label, r in zip(labels, runs, strict=True)]


def _short_pair(key: str, value: Any, present: bool) -> str:
    shown = format_value(value) if present else "-"
    return shown if key == "variant" else f"{key.rsplit('.', 1)[-1]}={shown}"


# --------------------------------------------------------------------------------------------- metrics
def metrics_table(evals: Mapping[str, Mapping[str, Mapping[str, Any]]], metric: str = "accuracy",
                  split: str = "test") -> pd.DataFrame:
    """One row per run, one column per subset of ``split``: a paper's ablation table.

    Args:
        evals: ``{run label: io.read_eval(run_dir)}``.
        metric: a field of the eval results: ``accuracy``, ``mean_class_accuracy``, ``macro_f1``.
        split: which split's subsets to tabulate.

    Returns:
        Fractions (0-1; NaN where a run lacks the subset), indexed by run label, columns in the order the subsets
        first appear (``all`` first).
    """
    columns: list[str] = []
    rows = {}
    for label, results in evals.items():
        row = {}
        for key, result in results.items():
            result_split, _, subset = key.partition("/")
            if result_split != split:
                continue
            if subset not in columns:
                columns.append(subset)
            value = result.get(metric)
            row[subset] = float(value) if isinstance(value, int | float) else math.nan
        rows[label] = row
    columns.sort(key=lambda s: s != "all")
    table = pd.DataFrame.from_dict(rows, orient="index", columns=columns, dtype=float)
    table.index.name = "run"
    return table


def best_per_column(table: pd.DataFrame, higher_is_better: bool = True) -> dict[str, list[Any]]:
    """The row labels holding each column's best value (all of them on a tie; none for an all-NaN column)."""
    best = {}
    for col in table.columns:
        values = table[col]
        if values.notna().any():
            target = values.max() if higher_is_better else values.min()
            best[col] = list(values.index[np.isclose(values, target, rtol=0, atol=1e-12)])
        else:
            best[col] = []
    return best


def recall(confusion: Sequence[Sequence[float]]) -> np.ndarray:
    """Per-class recall (the row-normalised diagonal) of a confusion matrix; NaN for a class with no faces."""
    counts = np.asarray(confusion, dtype=float)
    totals = counts.sum(axis=1)
    return np.divide(np.diag(counts), totals, out=np.full(len(totals), np.nan), where=totals > 0)


def row_shares(confusion: Sequence[Sequence[float]]) -> np.ndarray:
    """A confusion matrix with each row divided by its total (empty rows stay 0)."""
    counts = np.asarray(confusion, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def confusion_difference(a: Mapping[str, Any], b: Mapping[str, Any], normalise: bool = True) -> np.ndarray:
    """``B - A`` of two eval results' confusion matrices: in percentage points of each row, or in faces.

    Raises:
        ValueError: the two results have different class names (their matrices do not line up).
    """
    if list(a["class_names"]) != list(b["class_names"]):
        raise ValueError(f"cannot subtract confusion matrices over different classes: {a['class_names']} vs "
                         f"{b['class_names']}")
    if normalise:
        return 100.0 * (row_shares(b["confusion"]) - row_shares(a["confusion"]))
    return np.asarray(b["confusion"], dtype=float) - np.asarray(a["confusion"], dtype=float)


def class_accuracy_deltas(results: Mapping[str, Mapping[str, Any]], reference: str) -> pd.DataFrame:
    """Per-class accuracy (recall) of each run minus the reference run's, in percentage points.

    Args:
        results: ``{run label: eval result}`` for one split/subset (each with ``confusion`` and ``class_names``).
        reference: the label of the run to subtract.

    Returns:
        Indexed by class name (the reference's order), one column per other run; classes are matched by name and a
        class a run lacks is NaN.
    """
    if reference not in results:
        raise ValueError(f"reference run {reference!r} is not among {', '.join(results)}")
    ref = results[reference]
    names = list(ref["class_names"])
    base = pd.Series(recall(ref["confusion"]), index=names)
    columns = {}
    for label, result in results.items():
        if label == reference:
            continue
        other = pd.Series(recall(result["confusion"]), index=list(result["class_names"])).reindex(names)
        columns[label] = 100.0 * (other - base)
    frame = pd.DataFrame(columns, index=names, dtype=float)
    frame.index.name = "class"
    return frame


# --------------------------------------------------------------------------------------------- arms (seeds)
ARM_IGNORED_KEYS = (*IGNORED_KEYS, SEED_KEY)
"""Config keys that do not separate arms: runs equal apart from these are repeats of one configuration."""


@dataclass(frozen=True)
class Arm:
    """Runs of one configuration that differ only by seed (one run is an arm too)."""

    label: str
    run_ids: tuple[str, ...]
    paths: tuple[str, ...]
    seeds: tuple[Any, ...]

    @property
    def n(self) -> int:
        """How many runs (seeds) the arm has."""
        return len(self.run_ids)


def arm_key(config: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """What identifies a run's arm: its flattened config without :data:`ARM_IGNORED_KEYS`, values as text.

    A key set to null counts as not set, so a run written before a config key existed (``model.init_from`` missing)
    and one written after (``model.init_from: null``) stay in one arm.
    """
    return tuple(sorted((k, format_value(v)) for k, v in flatten(config).items()
                        if k.split(".", 1)[0] not in ARM_IGNORED_KEYS and v is not None))


def group_arms(runs: Sequence[Mapping[str, Any]], configs: Sequence[Mapping[str, Any]]) -> list[Arm]:
    """Put runs that differ only by seed into arms.

    Two runs are in one arm when their configs are equal apart from :data:`ARM_IGNORED_KEYS` (``name``, ``group``,
    ``tags``, ``seed``). Arms are named like runs (:func:`short_labels` of each arm's first run, with the seed left
    out of its tags and config), so a sweep's arms go by their swept values (``scn``, ``lr=0.01``).

    Args:
        runs: run summaries (``io.list_runs`` rows: ``run_id``, ``path``, ``name``, ``tags``).
        configs: the runs' configs (``io.read_config``), in the same order.

    Returns:
        The arms in the order their first run appears; each arm's runs in the given order.
    """
    if len(runs) != len(configs):
        raise ValueError(f"got {len(runs)} runs and {len(configs)} configs")
    members: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        members.setdefault(arm_key(config), []).append(i)
    firsts = [idx[0] for idx in members.values()]
    reps = [{**runs[i], "tags": {k: v for k, v in (runs[i].get("tags") or {}).items() if k != SEED_KEY}}
            for i in firsts]
    rep_configs = [{k: v for k, v in configs[i].items() if k != SEED_KEY} for i in firsts]
    labels = short_labels(reps, rep_configs)
    return [Arm(label=label, run_ids=tuple(str(runs[i]["run_id"]) for i in idx),
                paths=tuple(str(runs[i].get("path", "")) for i in idx),
                seeds=tuple(configs[i].get(SEED_KEY) for i in idx))
            for label, idx in zip(labels, members.values(), strict=True)]


def arm_metrics(arms: Sequence[Arm], evals: Mapping[str, Mapping[str, Mapping[str, Any]]], metric: str = "accuracy",
                split: str = "test", confidence: float = stats.CONFIDENCE) -> pd.DataFrame:
    """Mean over each arm's seeds, with its Student-t interval (:func:`fer_core.stats.mean_ci`), per subset.

    Args:
        arms: from :func:`group_arms`.
        evals: ``{run id: io.read_eval(run_dir)}`` for every run of the arms.
        metric: ``accuracy``, ``mean_class_accuracy`` or ``macro_f1``.
        split: whose subsets to summarise.
        confidence: of the intervals.

    Returns:
        One row per arm and subset: ``arm``, ``subset``, ``n`` (runs with that result), ``mean``, ``low``, ``high``,
        ``half_width`` (0-1 fractions; the bounds are NaN for an arm with one run), ``text`` (``"62.3 ± 4.1%"``).
        Arms in order, subsets in first appearance with ``all`` first.
    """
    rows = []
    for arm in arms:
        table = metrics_table({run_id: evals.get(run_id, {}) for run_id in arm.run_ids}, metric=metric, split=split)
        for subset in table.columns:
            ci = stats.mean_ci(table[subset].to_numpy(), confidence)
            rows.append({"arm": arm.label, "subset": subset, "n": ci.n, "mean": ci.mean, "low": ci.low,
                         "high": ci.high, "half_width": ci.half_width, "text": ci.format()})
    frame = pd.DataFrame(rows, columns=["arm", "subset", "n", "mean", "low", "high", "half_width", "text"])
    order = list(dict.fromkeys(["all", *frame["subset"]])) if len(frame) else []
    frame["_s"] = frame["subset"].map({s: i for i, s in enumerate(order)})
    frame["_a"] = frame["arm"].map({a.label: i for i, a in enumerate(arms)})
    return frame.sort_values(["_a", "_s"], kind="stable").drop(columns=["_a", "_s"]).reset_index(drop=True)


CONVERGENCE_EPOCHS = 5
CONVERGENCE_GAIN = 0.01
"""An arm has converged when its validation accuracy, averaged over its seeds, gained under 1 point over its last
five epochs (the rule docs/EXPERIMENTS.md states; at 800 validation faces one point is eight faces)."""


def curve_gain(curves: Sequence[Sequence[Mapping[str, Any]]], key: str = "val_acc",
               epochs: int = CONVERGENCE_EPOCHS) -> float | None:
    """What the runs' mean curve of ``key`` gained over its last ``epochs`` epochs.

    Args:
        curves: each run's ``metrics.jsonl`` rows (``io.read_metrics``); rows without ``key`` are skipped, and the
            runs are cut to the shortest so the mean is over the same epochs.
        key: the metric (a fraction).
        epochs: the window.

    Returns:
        The gain (a fraction; negative when the curve fell), or None when a run has ``epochs`` or fewer values.
    """
    series = [[row[key] for row in rows if row.get(key) is not None] for rows in curves]
    n = min((len(s) for s in series), default=0)
    if n <= epochs:
        return None
    mean = np.mean([s[:n] for s in series], axis=0)
    return float(mean[-1] - mean[-1 - epochs])


def arm_convergence(arms: Sequence[Arm], metrics: Mapping[str, Sequence[Mapping[str, Any]]],
                    epochs: int = CONVERGENCE_EPOCHS, gain: float = CONVERGENCE_GAIN) -> pd.DataFrame:
    """Whether each arm's validation curve had stopped rising (:func:`curve_gain` against ``gain``).

    Args:
        arms: from :func:`group_arms`.
        metrics: ``{run id: io.read_metrics(run_dir)}`` for the arms' runs.

    Returns:
        One row per arm: ``arm``, ``seeds``, ``epochs`` (of its shortest curve), ``gain`` (fraction or None),
        ``converged`` (bool, or None when a curve is too short to tell) and ``text`` (``"+2.1 points: still
        rising"``).
    """
    rows = []
    for arm in arms:
        curves = [metrics.get(run_id) or [] for run_id in arm.run_ids]
        lengths = [len([r for r in c if r.get("val_acc") is not None]) for c in curves]
        value = curve_gain(curves, epochs=epochs)
        converged = None if value is None else bool(value < gain)
        text = ("–" if value is None else
                f"{100 * value:+.1f} points: " + ("converged" if converged else "still rising"))
        rows.append({"arm": arm.label, "seeds": arm.n, "epochs": min(lengths, default=0), "gain": value,
                     "converged": converged, "text": text})
    return pd.DataFrame(rows, columns=["arm", "seeds", "epochs", "gain", "converged", "text"])


def arm_table(summary: pd.DataFrame) -> pd.DataFrame:
    """An :func:`arm_metrics` summary as a paper's table: one row per arm, ``seeds`` (runs), then one text column
    per subset, ``mean ± half-width`` (``"–"`` where an arm lacks the subset)."""
    if summary.empty:
        return pd.DataFrame(columns=["seeds"])
    arms = list(dict.fromkeys(summary["arm"]))
    table = summary.pivot(index="arm", columns="subset", values="text").reindex(arms)
    table = table[list(dict.fromkeys(summary["subset"]))].fillna("–")
    table.insert(0, "seeds", summary.groupby("arm", sort=False)["n"].max().reindex(arms).astype(int))
    table.index.name = "arm"
    table.columns.name = None
    return table


COMPARISON_COLUMNS = ["a", "b", "subset", "test", "n_faces", "seeds_a", "seeds_b", "accuracy_a", "accuracy_b",
                      "difference", "low", "high", "p_value", "only_a", "only_b", "supported", "verdict", "error"]
"""The columns of :func:`arm_comparisons`."""


def arm_comparisons(arms: Mapping[str, Sequence[str | os.PathLike]], *, pairs: Sequence[tuple[str, str]] | None = None,
                    subsets: Sequence[str] | None = None, split: str = "test", alpha: float = stats.ALPHA,
                    n_resamples: int = stats.N_RESAMPLES, seed: int = 0,
                    read: Callable[[str | os.PathLike, str, str], pd.DataFrame] = io.read_predictions) -> pd.DataFrame:
    """Paired tests between arms on the same test faces (:func:`fer_core.stats.paired_test`), per subset.

    Args:
        arms: ``{arm label: run folders}`` (e.g. ``{a.label: a.paths for a in group_arms(...)}``).
        pairs: ``(A, B)`` label pairs, the difference being B − A; default every pair, earlier arm as A.
        subsets: default every subset of ``split`` evaluated in every run of the pair (``all`` first).
        split: the evaluated split.
        alpha: significance level (and ``1 - alpha`` intervals).
        n_resamples: bootstrap replicates.
        seed: of the bootstrap (the same seed gives the same table).
        read: reads one run's predictions (``io.read_predictions``; a cached reader in the app).

    Returns:
        One row per pair and subset: ``a``, ``b``, ``subset``, ``test`` (McNemar exact / paired bootstrap),
        ``n_faces``, ``seeds_a``, ``seeds_b``, ``accuracy_a``, ``accuracy_b``, ``difference`` (B − A), ``low``,
        ``high`` (its bootstrap interval), ``p_value``, ``only_a`` and ``only_b`` (McNemar's discordant faces: right
        only in A, only in B; NaN for the bootstrap), ``supported`` (the test supports a difference, see
        :mod:`fer_core.stats`), ``verdict`` (on "B beats A") and ``error``: why a pair could not be tested (faces
        that differ, missing predictions), None otherwise; the numbers of such a row are NaN.
    """
    labels = list(arms)
    pairs = list(itertools.combinations(labels, 2)) if pairs is None else list(pairs)
    unknown = sorted({x for pair in pairs for x in pair} - set(labels))
    if unknown:
        raise ValueError(f"unknown arm(s) {', '.join(unknown)}; arms: {', '.join(labels)}")
    cache: dict[tuple[str, str], pd.DataFrame] = {}

    def predictions(path: str | os.PathLike, subset: str) -> pd.DataFrame:
        key = (str(path), subset)
        if key not in cache:
            cache[key] = read(path, split, subset)
        return cache[key]

    rows = []
    for a, b in pairs:
        dirs = [*arms[a], *arms[b]]
        for subset in list(subsets) if subsets is not None else _common_subsets(dirs, split):
            row: dict[str, Any] = {"a": a, "b": b, "subset": subset}
            try:
                result = stats.paired_test_from_predictions(
                    {Path(d).name: predictions(d, subset) for d in arms[a]},
                    {Path(d).name: predictions(d, subset) for d in arms[b]},
                    alpha=alpha, n_resamples=n_resamples, seed=seed)
            except (FileNotFoundError, ValueError) as err:
                rows.append({**row, "supported": False, "verdict": None, "error": str(err)})
                continue
            rows.append({**row, "test": result.test, "n_faces": result.n_faces, "seeds_a": result.seeds_a,
                         "seeds_b": result.seeds_b, "accuracy_a": result.accuracy_a, "accuracy_b": result.accuracy_b,
                         "difference": result.difference, "low": result.low, "high": result.high,
                         "p_value": result.p_value, "only_a": result.mcnemar.only_a if result.mcnemar else None,
                         "only_b": result.mcnemar.only_b if result.mcnemar else None,
                         "supported": result.supported, "verdict": result.verdict, "error": None})
    frame = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    for column in ("error", "verdict", "test"):  # None, not NaN, where there is nothing to say
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def _common_subsets(run_dirs: Sequence[str | os.PathLike], split: str) -> list[str]:
    """The subsets of ``split`` every run has results for: ``all``, the challenge subsets in the order of
    :data:`fer_core.labels.SUBSETS`, then any other alphabetically."""
    common: set[str] | None = None
    for d in run_dirs:
        have = {key.partition("/")[2] for key in io.read_eval(d) if key.partition("/")[0] == split}
        common = have if common is None else common & have
    order = {s: i for i, s in enumerate(("all", *SUBSETS))}
    return sorted(common or (), key=lambda s: (order.get(s, len(order)), s))


def format_p(p: float) -> str:
    """``"p = 0.004"``, ``"p < 0.001"``; ``""`` for NaN."""
    if not isinstance(p, int | float) or not math.isfinite(p):
        return ""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def format_difference(row: Mapping[str, Any]) -> str:
    """One :func:`arm_comparisons` row as a table cell: ``"+3.2 pp ▲ p = 0.004"`` when the test supports the
    difference (▼ for B worse), else ``"+0.8 pp n.s."``; ``"not paired"`` for a row with an error."""
    if _error(row) or not math.isfinite(float(row.get("difference", math.nan))):
        return "not paired"
    text = f"{100 * row['difference']:+.1f} pp".replace("-", "−")
    if row.get("supported"):
        return f"{text} {'▲' if row['difference'] > 0 else '▼'} {format_p(row['p_value'])}"
    return f"{text} n.s."


def _error(row: Mapping[str, Any]) -> str | None:
    """The ``error`` of an :func:`arm_comparisons` row, None when the pair was tested."""
    error = row.get("error")
    return error if isinstance(error, str) and error else None


def difference_table(comparisons: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`arm_comparisons` as a table: one row per pair (``"B − A"``), one column per subset, cells from
    :func:`format_difference`.

    Returns:
        ``(text, supported)``: the cells, and a boolean table of the same shape saying which to mark.
    """
    if comparisons.empty:
        empty = pd.DataFrame(index=pd.Index([], name="difference"))
        return empty, empty.astype(bool)
    frame = comparisons.assign(pair=comparisons["b"] + " − " + comparisons["a"],
                               cell=comparisons.apply(format_difference, axis=1),
                               marked=comparisons["supported"].fillna(False).astype(bool))
    pairs, subsets = list(dict.fromkeys(frame["pair"])), list(dict.fromkeys(frame["subset"]))
    text = frame.pivot(index="pair", columns="subset", values="cell").reindex(index=pairs, columns=subsets)
    marked = frame.pivot(index="pair", columns="subset", values="marked").reindex(index=pairs, columns=subsets)
    for table in (text, marked):
        table.index.name, table.columns.name = "difference", None
    return text.fillna("–"), marked.fillna(False).astype(bool)


def comparison_details(comparisons: pd.DataFrame) -> pd.DataFrame:
    """:func:`arm_comparisons` with its numbers as text, for a table a reader can check: the pair and subset, B − A
    with its interval and p, whether it is supported, the verdict, both accuracies, faces, seeds and the test."""
    rows = []
    for _, r in comparisons.iterrows():
        paired = _error(r) is None
        pct = (lambda v: f"{100 * v:.1f}%") if paired else (lambda v: "")
        rows.append({
            "B − A": f"{r['b']} − {r['a']}", "subset": r["subset"],
            "B − A (pp)": f"{100 * r['difference']:+.1f}" if paired else "",
            "95% CI (pp)": f"{100 * r['low']:+.1f} to {100 * r['high']:+.1f}" if paired else "",
            "p": format_p(r["p_value"]).removeprefix("p ").removeprefix("= ") if paired else "",
            "supported": bool(r["supported"]), "verdict on B > A": r["verdict"] or "",
            "accuracy A": pct(r["accuracy_a"]), "accuracy B": pct(r["accuracy_b"]),
            "faces": int(r["n_faces"]) if paired else None,
            "seeds A / B": f"{int(r['seeds_a'])} / {int(r['seeds_b'])}" if paired else "",
            "test": r["test"] if paired else "not paired", "note": _error(r) or "",
        })
    return pd.DataFrame(rows, columns=["B − A", "subset", "B − A (pp)", "95% CI (pp)", "p", "supported",
                                       "verdict on B > A", "accuracy A", "accuracy B", "faces", "seeds A / B", "test",
                                       "note"])


def text_markdown(table: pd.DataFrame, marked: pd.DataFrame | None = None) -> str:
    """A table of text cells (:func:`arm_table`, :func:`difference_table`) as Markdown; ``marked`` cells in bold."""
    head = [str(table.index.name or ""), *map(str, table.columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([" --- "] + [" ---: "] * len(table.columns)) + "|"]
    for label, row in table.iterrows():
        cells = [str(label)]
        for col in table.columns:
            bold = marked is not None and col in marked.columns and bool(marked.at[label, col])
            cells.append(f"**{row[col]}**" if bold else str(row[col]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- sweeps
def sweep_frame(runs: Sequence[Mapping[str, Any]], evals: Sequence[Mapping[str, Mapping[str, Any]]],
                keys: Sequence[str] | None = None, metric: str = "accuracy", split: str = "test") -> pd.DataFrame:
    """A long table of a group's results: one row per run and subset of ``split``.

    Args:
        runs: run summaries (``run_id``, ``tags``).
        evals: each run's ``io.read_eval`` results, in the same order.
        keys: the tag keys to put in columns (default :func:`swept_keys` of the runs' tags).
        metric: which eval field goes in ``value``.
        split: the split whose subsets are read.

    Returns:
        Columns ``run_id``, one per key (the tag's value, None where a run lacks it), ``subset``, ``value``.
    """
    tags = [r.get("tags") or {} for r in runs]
    keys = list(swept_keys(tags) if keys is None else keys)
    rows = []
    for run, tag, results in zip(runs, tags, evals, strict=True):
        for key, result in results.items():
            result_split, _, subset = key.partition("/")
            value = result.get(metric)
            if result_split == split and isinstance(value, int | float):
                rows.append({"run_id": run["run_id"], **{k: tag.get(k) for k in keys}, "subset": subset,
                             "value": float(value)})
    return pd.DataFrame(rows, columns=["run_id", *keys, "subset", "value"])


def is_numeric(values: Iterable[Any]) -> bool:
    """Whether every value is a number (bools are not), so a sweep over them can be drawn on a numeric axis."""
    values = list(values)
    return bool(values) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def default_sweep_axis(frame: pd.DataFrame, keys: Sequence[str]) -> str | None:
    """The key to put on the x axis: the first numeric swept key that is not the seed, else the first non-seed key."""
    candidates = [k for k in keys if k != SEED_KEY]
    for key in candidates:
        if is_numeric(frame[key].dropna()) and frame[key].notna().all():
            return key
    return candidates[0] if candidates else (keys[0] if keys else None)


def accuracy_vs_swept(frame: pd.DataFrame, x: str, by: Sequence[str] = (), seed_key: str = SEED_KEY
                      ) -> pd.DataFrame:
    """Aggregate a :func:`sweep_frame` over repeated runs: mean, min, max and the mean's 95% Student-t interval per
    (``by``..., subset, x value).

    Runs that differ only in ``seed_key`` (or in any key not named in ``x`` and ``by``) are the repeats.

    Returns:
        Columns ``*by``, ``subset``, ``x`` (the swept value), ``mean``, ``min``, ``max``, ``n`` (runs averaged),
        ``half_width``, ``low``, ``high`` (:func:`fer_core.stats.mean_ci`; NaN for a single run), sorted by ``by``
        and subset, then by ``x`` (numerically when every value is a number, else in order of first appearance).
    """
    del seed_key  # the seed is simply not a grouping key; named for readability of the calls
    groups = [*by, "subset", x]
    if frame.empty:
        return pd.DataFrame(columns=[*by, "subset", "x", "mean", "min", "max", "n", "half_width", "low", "high"])
    data = frame.copy()
    for key in groups:  # None would be dropped by groupby; keep it as a value of its own
        data[key] = data[key].astype(object).where(data[key].notna(), None)
    order = {v: i for i, v in enumerate(dict.fromkeys(map(_hashable, data[x])))}
    data["_x"] = data[x].map(_hashable)
    agg = (data.groupby([*by, "subset", "_x"], dropna=False, sort=False)["value"]
           .agg(mean="mean", min="min", max="max", n="count",
                half_width=lambda v: stats.mean_ci(v.to_numpy()).half_width).reset_index())
    agg["low"], agg["high"] = agg["mean"] - agg["half_width"], agg["mean"] + agg["half_width"]
    agg = agg.rename(columns={"_x": "x"})
    numeric = is_numeric(v for v in agg["x"] if v is not None)
    agg["_order"] = agg["x"].map(lambda v: (v is None, v if numeric and v is not None else order.get(v, 0)))
    subset_rank = {s: i for i, s in enumerate(dict.fromkeys(data["subset"]))}
    subset_rank.setdefault("all", -1)
    agg["_subset"] = agg["subset"].map(lambda s: subset_rank.get(s, 99) if s != "all" else -1)
    agg = agg.sort_values([*by, "_subset", "_order"], kind="stable").drop(columns=["_order", "_subset"])
    agg["n"] = agg["n"].astype(int)
    return agg.reset_index(drop=True)


def _hashable(value: Any) -> Any:
    return format_value(value) if isinstance(value, list | dict) else value


# --------------------------------------------------------------------------------------------- confusion drill-down
def cell_samples(predictions: pd.DataFrame, true: int, pred: int) -> pd.DataFrame:
    """The faces behind confusion cell (``true``, ``pred``), in the order to look at them.

    A mistake (``true != pred``) lists the most confident first (the model was surest and wrong); a diagonal cell
    the least confident first (right, but barely). Ties keep the data set's order.

    Args:
        predictions: ``io.read_predictions`` (``index``, ``label``, ``pred``, ``confidence``, ``prob_<class>``...).
        true: the true class index (the matrix row).
        pred: the predicted class index (the column).
    """
    rows = predictions[(predictions["label"] == true) & (predictions["pred"] == pred)]
    return rows.sort_values("confidence", ascending=true == pred, kind="stable").reset_index(drop=True)


def top_confusion(confusion: Sequence[Sequence[float]]) -> tuple[int, int]:
    """``(true, predicted)`` of the largest off-diagonal cell (the most frequent mistake; the first on a tie), or of
    the largest diagonal cell when there is no mistake."""
    counts = np.asarray(confusion, dtype=float)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or not counts.size:
        raise ValueError(f"a confusion matrix must be square and non-empty, got shape {counts.shape}")
    off = counts.copy()
    np.fill_diagonal(off, -1.0)
    if off.max() > 0:
        t, p = np.unravel_index(int(np.argmax(off)), off.shape)
        return int(t), int(p)
    t = int(np.argmax(np.diag(counts)))
    return t, t


def probabilities(row: Mapping[str, Any], class_names: Sequence[str]) -> dict[str, float]:
    """``{class: probability}`` of one predictions row (its ``prob_<class>`` columns), most probable first."""
    probs = {name: float(row[f"prob_{name}"]) for name in class_names if f"prob_{name}" in row}
    return dict(sorted(probs.items(), key=lambda kv: kv[1], reverse=True))


def page_count(n: int, per_page: int) -> int:
    """How many pages ``n`` items fill at ``per_page`` a page (at least 1)."""
    return max(1, math.ceil(n / per_page))


def run_dataset(run_dir: str | os.PathLike, split: str, subset: str = "all"):
    """The data set a run was evaluated on, rebuilt from its ``config.yaml`` (the rows of its predictions CSV are
    positions in it: ``predictions["index"]``)."""
    from fer_core.config import load_config
    from fer_core.data import build_dataset

    data = load_config(Path(run_dir) / "config.yaml").data
    return build_dataset(data.name, root=data.root, split=split, subset=None if subset == "all" else subset,
                         **data.options)


def face_images(dataset: Any, indices: Iterable[int]) -> list[np.ndarray]:
    """The faces at ``indices`` of a data set as RGB uint8 ``H x W x 3`` arrays (``ds[i]["image"]`` is C x H x W)."""
    faces = []
    for i in indices:
        image = dataset[int(i)]["image"].numpy()
        faces.append(np.ascontiguousarray(np.repeat(image, 3, 0) if image.shape[0] == 1 else image).transpose(1, 2, 0))
    return faces


def explain_faces(predictor: Any, faces: Sequence[np.ndarray], targets: Sequence[int], method: str = "gradcam"
                  ) -> list[np.ndarray]:
    """Each face with the explanation of its target class drawn over it (``fer_core.explain.overlay``).

    Args:
        predictor: a :class:`fer_core.predict.Predictor` (e.g. ``Predictor.from_run``); its ``explain_crop`` explains
            the crop as it is (no face detection) and holds the predictor's lock, so a cached, shared model is safe.
        faces: RGB uint8 face crops, as the data set has them.
        targets: the class index to explain for each face (e.g. the predicted class).
        method: an explanation method of :mod:`fer_core.explain`.
    """
    from fer_core.explain import overlay

    return [overlay(face, predictor.explain_crop(face, method, target=int(target)).map)
            for face, target in zip(faces, targets, strict=True)]


def markdown_table(table: pd.DataFrame, best: Mapping[str, Sequence[Any]] | None = None, *, percent: bool = True,
                   digits: int = 1) -> str:
    """A :func:`metrics_table` as a Markdown table to paste into a paper or report, best values in bold.

    Args:
        table: runs x subsets, 0-1 fractions.
        best: ``{column: [row labels]}`` to set in bold (default :func:`best_per_column`).
        percent: print values as percentages.
        digits: decimals.
    """
    best = best_per_column(table) if best is None else best
    head = [str(table.index.name or "run"), *map(str, table.columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([" --- "] + [" ---: "] * len(table.columns)) + "|"]
    for label, row in table.iterrows():
        cells = [str(label)]
        for col in table.columns:
            value = row[col]
            text = "–" if pd.isna(value) else f"{100 * value if percent else value:.{digits}f}"
            cells.append(f"**{text}**" if label in best.get(col, ()) else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- calibration
CALIBRATION_COLUMNS = ["accuracy", "ece", "ece_adaptive", "nll", "brier", "temperature", "ece_calibrated",
                       "nll_calibrated"]


def calibration_table(evals: Mapping[str, Mapping[str, Mapping[str, Any]]], key: str = "test/all") -> pd.DataFrame:
    """One row per run, the calibration of one split/subset beside its accuracy: ``accuracy``, ``ece``,
    ``ece_adaptive``, ``nll``, ``brier``, and with the run's temperature ``temperature``, ``ece_calibrated`` and
    ``nll_calibrated`` (after temperature scaling). NaN where a run lacks the result or the number (an eval file
    from before calibration existed, a run without a temperature).

    Args:
        evals: ``{run label: io.read_eval(run_dir)}``.
        key: ``"<split>/<subset>"``.
    """
    rows = {}
    for label, results in evals.items():
        result = results.get(key) or {}
        scaled = result.get("calibrated") or {}
        values = {name: result.get(name) for name in CALIBRATION_COLUMNS[:5]}
        values.update(temperature=scaled.get("temperature"), ece_calibrated=scaled.get("ece"),
                      nll_calibrated=scaled.get("nll"))
        rows[label] = {k: float(v) if isinstance(v, int | float) else math.nan for k, v in values.items()}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=CALIBRATION_COLUMNS, dtype=float)
    table.index.name = "run"
    return table
