"""UI helpers shared by the pages: where things live, cached reads of run folders, and table formatting.

Nothing here trains or evaluates: reads go through :mod:`fer_core.io`, and the caches are keyed on the files'
modification times, so a page always shows what is on disk without re-reading unchanged runs. Every page imports
this module, so it imports nothing heavy at the top (the registries are read inside the functions that need them).
The model and face pickers are in :mod:`app.pickers`.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from fer_core import io, lifecycle
from fer_core.labels import SUBSETS
from fer_core.runs import resumable

ROOT = Path(__file__).resolve().parent.parent
HOME_PAGE = ROOT / "pages" / "home.py"
RUN_PAGE = ROOT / "pages" / "run.py"
DEMO_CONFIG = ROOT / "configs" / "synth_quick.yaml"
"""What the Home page's demo button trains; ``$FER_DEMO_CONFIG`` replaces it (e.g. a smaller one for screenshots)."""

ACTIVE_STATES = ("queued", "running")
"""States of a run whose process is (meant to be) alive; pages poll these."""

STATE_COLORS = {
    "done": "green",
    "running": "blue",
    "queued": "violet",
    "failed": "red",
    "interrupted": "orange",
    "cancelled": "gray",
    "unknown": "gray",
}
MISSING = "—"
"""What a table shows for a missing value (``st.dataframe(..., placeholder=MISSING)``), e.g. a subset without an
accuracy."""


def demo_config() -> Path:
    """The config file the demo button trains: ``$FER_DEMO_CONFIG`` if set, else :data:`DEMO_CONFIG`."""
    return Path(os.environ.get("FER_DEMO_CONFIG") or DEMO_CONFIG).resolve()


def progress_text(run_id: str | None, state: str, status: Mapping[str, Any], metrics: Sequence[Mapping[str, Any]],
                  epochs: int | None) -> str:
    """One line saying how far a queued or running run is, e.g. ``running · epoch 3/6 · val acc 41.2%``."""
    epoch = status.get("epoch") or (metrics[-1].get("epoch") if metrics else 0) or 0
    parts = [f"**{run_id}**"] if run_id else []
    parts += [state, f"epoch {epoch}/{epochs or '?'}"]
    if state == "queued":
        parts.append("waiting for the training process to start")
    elif not epoch:
        parts.append("preparing data and model")
    if metrics and isinstance(metrics[-1].get("val_acc"), int | float):
        parts.append(f"val acc {100 * metrics[-1]['val_acc']:.1f}%")
    return " · ".join(parts)


# --------------------------------------------------------------------------------------------- cache keys
def file_stamp(path: str | os.PathLike) -> tuple[int, int]:
    """(mtime_ns, size) of ``path``, or (0, 0) if it does not exist: a cache key that changes with the file."""
    try:
        st_ = Path(path).stat()
    except OSError:
        return (0, 0)
    return (st_.st_mtime_ns, st_.st_size)


def folder_stamp(folder: str | os.PathLike, pattern: str = "*") -> tuple:
    """``(name, mtime_ns, size)`` of each file in ``folder`` matching ``pattern``, sorted; () if there is no such
    folder. A cache key that changes whenever one of those files is written."""
    folder = Path(folder)
    return tuple(sorted((p.name, *file_stamp(p)) for p in folder.glob(pattern))) if folder.is_dir() else ()


def _run_stamp(run_dir: Path) -> tuple:
    """Changes whenever a file of the run changes: atomic writes touch the folder, metrics.jsonl is appended."""
    return tuple(file_stamp(run_dir / name) for name in ("", "status.json", "metrics.jsonl", "eval"))


def _root_stamp(root: Path) -> tuple:
    """One :func:`_run_stamp` per entry of the runs folder (empty if the folder does not exist yet)."""
    try:
        entries = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return ()
    return (file_stamp(root), *((p.name, *_run_stamp(p)) for p in entries))


# --------------------------------------------------------------------------------------------- cached reads
@st.cache_data(show_spinner=False, max_entries=16)
def _cached_runs(root: str, stamp: tuple) -> tuple[list[dict], list[dict]]:
    runs = io.list_runs(root)
    return [dict(r) for r in runs], list(getattr(runs, "skipped", []))


def load_runs(root: str | os.PathLike | None = None) -> tuple[list[dict], list[dict]]:
    """Summaries of the runs under ``root`` (default ``fer_core.io.runs_dir()``), newest first, and skipped folders.

    Cached until a file in the runs folder changes. A run that says it is queued or running has its state checked
    again on every call, since its process can die without touching any file (it then reads ``interrupted``).
    """
    base = Path(root) if root is not None else io.runs_dir()
    runs, skipped = _cached_runs(str(base), _root_stamp(base))
    for row in runs:
        if row.get("state") in ACTIVE_STATES:
            row["state"] = io.run_state(row["path"])
    if any(r.get("slurm_job") and r.get("state") in (*ACTIVE_STATES, "interrupted") for r in runs):
        from fer_core import slurm

        slurm.refresh(runs)  # SLURM's queue state (asked at most every 15 s); a vanished job's run marked failed
    return runs, skipped


@st.cache_data(show_spinner=False, max_entries=64)
def _cached_metrics(run_dir: str, stamp: tuple) -> list[dict]:
    return io.read_metrics(run_dir)


def load_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """``fer_core.io.read_metrics``, cached until ``metrics.jsonl`` changes."""
    return _cached_metrics(str(run_dir), file_stamp(Path(run_dir) / "metrics.jsonl"))


@st.cache_data(show_spinner=False, max_entries=64)
def _cached_eval(run_dir: str, stamp: tuple) -> dict[str, dict]:
    return io.read_eval(run_dir)


def load_eval(run_dir: str | os.PathLike) -> dict[str, dict]:
    """``fer_core.io.read_eval``, cached until a file in ``eval/`` is written."""
    return _cached_eval(str(run_dir), folder_stamp(Path(run_dir) / "eval", "*.json"))


@st.cache_data(show_spinner=False, max_entries=64)
def _cached_config(run_dir: str, stamp: tuple) -> dict:
    return io.read_config(run_dir)


def load_config(run_dir: str | os.PathLike) -> dict:
    """``fer_core.io.read_config`` (empty dict if the run has no config yet), cached until it changes."""
    path = Path(run_dir) / "config.yaml"
    return _cached_config(str(run_dir), file_stamp(path)) if path.exists() else {}


def log_tail(run_dir: str | os.PathLike, lines: int = 40) -> tuple[str, str]:
    """``(file name, last lines)`` of the run's ``log.txt``, or of ``stdout.txt`` (where a trainer that crashed
    before it could log leaves its traceback) when the log is empty; ``("", "")`` if there is neither."""
    for name in ("log.txt", "stdout.txt"):
        try:
            with open(Path(run_dir) / name, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 64_000))
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            continue
        if text.strip():
            return name, "\n".join(text.splitlines()[-lines:])
    return "", ""


# --------------------------------------------------------------------------------------------- formatting
def state_badge(state: str) -> str:
    """Markdown for a coloured badge naming a run state, e.g. ``:green-badge[done]``."""
    return f":{STATE_COLORS.get(state, 'gray')}-badge[{state}]"


def format_time(timestamp: float | None) -> str:
    """A Unix time as local ``YYYY-MM-DD HH:MM`` ("" if missing)."""
    if not isinstance(timestamp, int | float):
        return ""
    return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def pct(value: Any) -> float | None:
    """A 0-1 fraction as a percentage (None stays None), for tables formatted ``%.1f%%``."""
    return round(100.0 * float(value), 2) if isinstance(value, int | float) else None


@functools.cache
def subset_order() -> tuple[str, ...]:
    """Display order of evaluation subsets: ``all``, then the library's subset names (``fer_core.labels.SUBSETS``:
    SynthFACS's, of which RAN's lists give three for real data sets)."""
    return ("all", *SUBSETS)


def ordered_subsets(names: Iterable[str]) -> list[str]:
    """Subset names in :func:`subset_order`, unknown ones after it alphabetically."""
    names = set(names)
    known = [s for s in subset_order() if s in names]
    return known + sorted(names - set(known))


def ordered_eval_keys(keys: Iterable[str]) -> list[str]:
    """``"split/subset"`` keys: test first, then val, then other splits; subsets in :func:`subset_order`."""
    split_rank = {"test": 0, "val": 1, "train": 2}
    subset_rank = {s: i for i, s in enumerate(subset_order())}

    def rank(key: str) -> tuple:
        split, _, subset = key.partition("/")
        return (split_rank.get(split, 9), split, subset_rank.get(subset, 99), subset)

    return sorted(keys, key=rank)


def run_link(run_id: str) -> str:
    """Relative URL of a run's page (the Run page reads ``?run=``)."""
    return f"run?run={run_id}"


def runs_frame(runs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The runs table: one row per run, accuracies in percent, one column per test subset."""
    subsets = ordered_subsets(s for r in runs for s in (r.get("subset_acc") or {}))
    rows = []
    for r in runs:
        epochs = r.get("epochs")
        row = {
            "run": run_link(r["run_id"]),
            "state": r.get("state", "unknown") + (f" · SLURM {r['slurm_job']} {r['queue']}"
                                                   if r.get("slurm_job") and r.get("queue") else ""),
            "model": r.get("model") or "",
            "data": r.get("dataset") or "",
            "epochs": f"{r.get('epoch') or 0}/{epochs}" if epochs else str(r.get("epoch") or 0),
            "val acc": pct(r.get("best_val_acc")),
            "test acc": pct(r.get("test_acc")),
        }
        for s in subsets:
            row[s] = pct((r.get("subset_acc") or {}).get(s))
        rows.append(row)
    columns = ["run", "state", "model", "data", "epochs", "val acc", "test acc", *subsets]
    return pd.DataFrame(rows, columns=columns)


STATE_TEXT_COLORS = {"green": "#177245", "blue": "#1f5fbf", "violet": "#6b3fb8", "red": "#b3261e",
                     "orange": "#a15c00", "gray": "#5f6368"}


def style_states(frame: pd.DataFrame) -> Any:
    """A Styler colouring the ``state`` column of :func:`runs_frame` like the state badges."""

    def color(state: str) -> str:
        return f"color: {STATE_TEXT_COLORS[STATE_COLORS.get(state.split(' ')[0], 'gray')]}; font-weight: 600"

    return frame.style.map(color, subset=["state"])


def runs_column_config(frame: pd.DataFrame) -> dict[str, Any]:
    """Column formats for :func:`runs_frame`: the run id as a link to its page, accuracies as percentages."""
    config: dict[str, Any] = {
        "run": st.column_config.LinkColumn("run", display_text=r"run\?run=(.*)", help="Open the run's page"),
        "epochs": st.column_config.TextColumn("epochs", help="finished / planned epochs", width="small"),
        "val acc": st.column_config.NumberColumn("val acc", format="%.1f%%", help="best validation accuracy",
                                                 width="small"),
        "test acc": st.column_config.NumberColumn("test acc", format="%.1f%%", help="test accuracy, all faces",
                                                  width="small"),
    }
    for col in frame.columns[7:]:
        config[col] = st.column_config.NumberColumn(col, format="%.1f%%", help=f"test accuracy on the {col} subset",
                                                    width="small")
    return config


EVAL_COLUMNS = ["split", "subset", "n", "accuracy", "mean class accuracy", "macro F1", "ECE", "ECE after T", "NLL",
                "Brier"]


def eval_frame(evals: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Per split/subset metrics for the run page's table, in :func:`ordered_eval_keys` order: accuracies and ECE in
    percent, NLL and Brier as they are. Eval files written before calibration existed (no ``ece``), and runs without
    a temperature (no ``calibrated``), show the missing values as blanks."""
    rows = []
    for key in ordered_eval_keys(evals):
        r = evals[key]
        split, _, subset = key.partition("/")
        rows.append({
            "split": split,
            "subset": subset,
            "n": r.get("n"),
            "accuracy": pct(r.get("accuracy")),
            "mean class accuracy": pct(r.get("mean_class_accuracy")),
            "macro F1": pct(r.get("macro_f1")),
            "ECE": pct(r.get("ece")),
            "ECE after T": pct((r.get("calibrated") or {}).get("ece")),
            "NLL": _number(r.get("nll")),
            "Brier": _number(r.get("brier")),
        })
    return pd.DataFrame(rows, columns=EVAL_COLUMNS)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


EVAL_COLUMN_CONFIG = {
    "n": st.column_config.NumberColumn("n", help="faces in the subset", format="%d"),
    "accuracy": st.column_config.NumberColumn("accuracy", format="%.1f%%"),
    "mean class accuracy": st.column_config.NumberColumn(
        "mean class accuracy", format="%.1f%%", help="accuracy averaged over classes (robust to class imbalance)"
    ),
    "macro F1": st.column_config.NumberColumn("macro F1", format="%.1f%%"),
    "ECE": st.column_config.NumberColumn(
        "ECE", format="%.1f%%", help="expected calibration error (15 confidence bins): how far the top class's "
        "probability is from how often it is right; lower is better"),
    "ECE after T": st.column_config.NumberColumn(
        "ECE after T", format="%.1f%%", help="ECE after temperature scaling (the logits divided by the run's "
        "temperature, fitted on the validation split): python -m fer_core calibrate RUN"),
    "NLL": st.column_config.NumberColumn("NLL", format="%.3f", help="negative log-likelihood of the true class "
                                         "(cross-entropy); lower is better"),
    "Brier": st.column_config.NumberColumn("Brier", format="%.3f", help="multiclass Brier score, mean of "
                                           "sum over classes of (p - y)², from 0 (perfect) to 2; lower is better"),
}


def run_label(run: Mapping[str, Any]) -> str:
    """One line naming a run in a select box: id, state, model and data."""
    what = " on ".join(x for x in (run.get("model"), run.get("dataset")) if x)
    return f"{run['run_id']}  ·  {run.get('state', 'unknown')}" + (f"  ·  {what}" if what else "")


def run_select(runs_by_id: Mapping[str, Mapping[str, Any]], key: str, label: str = "Choose a run", *,
               what: str = "run", container: Any = st) -> str:
    """A select box of runs kept in step with ``?run=``, so the URL can be shared; returns the chosen run id.

    ``?run=`` wins when it changed since this select box last wrote it (a link was followed), otherwise the select
    box does; an unknown ``?run=`` is a warning (``what`` names the kind of run the page lists) and the first run
    (the newest) is shown instead.

    Args:
        runs_by_id: the runs to offer, ``{run_id: summary}`` in display order (``load_runs`` rows).
        key: the select box's session_state key (``<page>.<name>``).
        label: the select box's label.
        what: the kind of run listed, for the warning (e.g. ``"SCN run"``).
        container: where to draw the select box (e.g. a column).
    """
    synced = f"{key}.synced_query"  # the ?run= value this select box last wrote
    wanted = st.query_params.get("run")
    if wanted and wanted not in runs_by_id:
        st.warning(f"There is no {what} `{wanted}` in `{io.runs_dir()}`; showing the newest one instead.")
    if wanted in runs_by_id and wanted != st.session_state.get(synced):
        st.session_state[key] = wanted
    elif st.session_state.get(key) not in runs_by_id:  # first visit, or the run folder was deleted meanwhile
        st.session_state[key] = next(iter(runs_by_id))
    run_id = container.selectbox(label, list(runs_by_id), key=key, format_func=lambda i: run_label(runs_by_id[i]))
    st.query_params["run"] = st.session_state[synced] = run_id
    return run_id


def stopped_run_tools(run_dir: Path, state: str, page: str) -> None:
    """For a run that stopped early: a button that resumes a cancelled or interrupted run from its last checkpoint
    (``fer_core.lifecycle.launch_resume``, a child process; the page reruns), and the last lines of its log (open for
    a failed run). Nothing for other states."""
    if state in ("interrupted", "cancelled") and resumable(run_dir):
        if st.button("Resume from the last checkpoint", icon=":material/play_arrow:", key=f"{page}.resume"):
            try:
                lifecycle.launch_resume(run_dir)
            except (RuntimeError, FileNotFoundError) as err:
                st.error(f"Could not resume: {err}")
            else:
                st.rerun()
    if state in ("failed", "interrupted", "cancelled"):
        name, tail = log_tail(run_dir)
        if tail:
            with st.expander(f"Last lines of {name}", expanded=state == "failed"):
                st.code(tail, language="text")


def progress_of(status: Mapping[str, Any], metrics: Sequence[Mapping[str, Any]], epochs: int | None) -> float:
    """Fraction of planned epochs finished (0..1) from status.json and metrics.jsonl."""
    epoch = status.get("epoch") or (metrics[-1].get("epoch") if metrics else 0) or 0
    total = status.get("epochs") or epochs
    if not total:
        return 0.0
    return max(0.0, min(1.0, float(epoch) / float(total)))


# --------------------------------------------------------------------------------------------- catalogue
@st.cache_data(show_spinner=False)
def model_frame() -> pd.DataFrame:
    """The model registry as a table: name, input, paper, origin and licence (read from each model's config)."""
    from fer_core.models import list_models, model_info

    rows = []
    for name in list_models():
        info = model_info(name)
        c, h, w = info.input_size
        rows.append({
            "model": name,
            "input": f"{c}×{h}×{w}",
            "paper": info.paper,
            "pretrained": info.pretrained or "—",
            "licence": info.licence,
        })
    return pd.DataFrame(rows, columns=["model", "input", "paper", "pretrained", "licence"])


def dataset_list() -> list[dict[str, Any]]:
    """The data set registry: ``name``, ``needs_root`` (reads files the user supplies), ``description``, and
    ``root``: the data set's folder under ``$FER_DATA`` (None when it is not there, and for built-in data sets).
    The app reads real data sets only from there."""
    from fer_core.data import configured_datasets, dataset_info, list_datasets

    roots = configured_datasets()
    return [{**dataset_info(name).to_dict(),
             "root": str(roots[name]) if name in roots else None} for name in list_datasets()]


def data_home_note() -> str:
    """Where the app looks for real data sets, as one Markdown sentence."""
    from fer_core.data import DATA_ENV, data_home

    home = data_home()
    if home is None:
        return (f"`{DATA_ENV}` is not set: to use a real data set, set it to a folder holding one sub-folder per "
                "data set (e.g. `rafdb/`, `fer2013/`) and restart the app.")
    return f"Real data sets are read from `{home}/<name>` (`{DATA_ENV}`)."
