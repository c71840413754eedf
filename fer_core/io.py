"""Plain files of the run folders: ids and paths, atomic writes, status, metrics, evaluation results, YAML.

A run is a folder ``<runs_dir>/<run_id>/`` (the contract is docs/CONTRACTS.md)::

    config.yaml  status.json  metrics.jsonl  checkpoints/  eval/  log.txt  (tensorboard/  tracking.json)

This module imports no torch, so whatever only reads runs (the app's pages, ``python -m fer_core runs``) stays light;
a run's model, checkpoints and data split are :mod:`fer_core.runs`'s, its lifecycle :mod:`fer_core.lifecycle`'s.

Every whole-file write goes through :func:`atomic_write_bytes` (temporary file in the same folder, fsync,
``os.replace``), so a reader never sees half a file and a killed run never leaves one. ``metrics.jsonl`` is
append-only; :func:`read_jsonl` tolerates a torn last line.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

STATES = ("queued", "running", "done", "failed", "cancelled")
"""States a run writes into ``status.json``. :func:`run_state` adds ``interrupted`` and ``unknown``."""

_RUN_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")


# --------------------------------------------------------------------------------------------- paths and ids
def runs_dir() -> Path:
    """The runs root: ``$FER_RUNS_DIR`` if set, else ``./runs``, as an absolute path."""
    return Path(os.environ.get("FER_RUNS_DIR") or "runs").expanduser().resolve()


def new_run_id(name: str) -> str:
    """A fresh run id like ``20261126-204501-synth_quick-3f2a``: local time, sanitised name, random suffix."""
    clean = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "_", name)).strip("._-")[:60] or "run"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{clean}-{secrets.token_hex(2)}"


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is a plain folder name, else raise ValueError saying what is allowed."""
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id) or ".." in run_id:
        raise ValueError(
            f"invalid run id {run_id!r}: a run id is one folder name made of letters, digits, '.', '_' and '-' "
            "(not starting with '.' or '-', no '/', no '..', at most 200 characters)"
        )
    return run_id


def run_path(run_id: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of run ``run_id`` under ``root`` (default :func:`runs_dir`); refuses ids that escape it."""
    base = Path(root).expanduser().resolve() if root is not None else runs_dir()
    path = base / check_run_id(run_id)
    if path.resolve().parent != base:  # e.g. a symlink pointing elsewhere
        raise ValueError(f"run id {run_id!r} resolves outside the runs folder {base}")
    return path


def resolve_run_dir(run: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Accept either a path to a run folder (``runs/<id>``) or a bare run id; return the existing folder."""
    candidate = Path(run).expanduser()
    if candidate.is_dir() and ((candidate / "status.json").exists() or (candidate / "config.yaml").exists()):
        return candidate.resolve()
    path = run_path(str(run), root)
    if not path.is_dir():
        raise FileNotFoundError(f"no run {str(run)!r}: neither a run folder nor a run id under {path.parent}")
    return path


def _unwritable(folder: Path, err: OSError) -> OSError:
    """``err`` (same type and errno) with a message that names the runs folder and what to do."""
    return type(err)(err.errno, f"cannot create a run in {folder}: {err.strerror}; make that folder writable or "
                                f"point FER_RUNS_DIR (--runs-dir) at one that is", str(folder))


def create_run_dir(run_id: str, root: str | os.PathLike | None = None, *, config: str | None = None,
                   **status: Any) -> Path:
    """Create the folder of a new run; raises FileExistsError if it exists, so two runs never share one.

    With ``config`` (the YAML text of ``config.yaml``) and/or ``status`` fields (for ``status.json``, e.g.
    ``state="queued", pid=os.getpid()``), the folder is built under a hidden temporary name and renamed into place
    with those files already in it: whenever a process creating a run is killed, there is either no run folder or
    one that readers list (and, with a pid, read as ``interrupted`` once that process is gone).
    An unwritable runs folder raises PermissionError (or the OSError met) naming it.
    """
    path = run_path(run_id, root)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _unwritable(path.parent, err) from None
    exists = FileExistsError(f"run folder {path} already exists; choose another run id")
    if config is None and not status:
        try:
            path.mkdir(exist_ok=False)
        except FileExistsError:
            raise exists from None
        except OSError as err:
            raise _unwritable(path.parent, err) from None
        return path
    if path.exists():
        raise exists
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{run_id}.", suffix=".tmp", dir=path.parent))
    except OSError as err:
        raise _unwritable(path.parent, err) from None
    try:
        if config is not None:
            atomic_write_text(tmp / "config.yaml", config)
        if status:
            write_status(tmp, **status)
        if path.exists():
            raise exists
        # a rename fails on a non-empty folder of that name (EEXIST/ENOTEMPTY); only one made empty in the instant
        # since the check could be replaced, and run ids carry a random suffix
        os.rename(tmp, path)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError) and err.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise exists from None
        raise
    return path


def create_new_run_dir(name: str, root: str | os.PathLike | None = None, *, tries: int = 20, config: str | None = None,
                       **status: Any) -> Path:
    """Create the folder of a new run with a fresh id from :func:`new_run_id` (see :func:`create_run_dir` for
    ``config`` and ``status``); on the rare clash with a run started in the same second, draw another id."""
    for attempt in range(tries):
        try:
            return create_run_dir(new_run_id(name), root, config=config, **status)
        except FileExistsError:
            if attempt + 1 == tries:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------------------------- atomic files
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: temporary file in the same folder, fsync, ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _write_error(path, err) from err
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise _write_error(path, err) from err
        raise
    return path


def _write_error(path: Path, err: OSError) -> OSError:
    """``err`` naming the file that could not be written (same type and errno), or ``err`` itself without errno."""
    if err.errno is None:
        return err
    return type(err)(err.errno, f"{err.strerror}: could not write {path.name}; any earlier version of it is left "
                                "as it was", str(path))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def append_jsonl(path: str | os.PathLike, obj: Mapping[str, Any]) -> None:
    """Append ``obj`` as one JSON line (flush + fsync). A torn last line left by a killed writer is dropped first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(obj) + "\n").encode()
    with open(path, "ab+") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(size - 1)
            if f.read(1) != b"\n":  # torn last line: rare, so reading the whole file is fine
                f.seek(0)
                f.truncate(f.read().rfind(b"\n") + 1)
                f.seek(0, os.SEEK_END)
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file. A malformed last line (torn write) is ignored; one in the middle raises ValueError."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    out = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            out.append(json.loads(text))
        except json.JSONDecodeError as err:
            if number == len(lines):
                break
            raise ValueError(f"{path}, line {number}: not valid JSON ({err.msg}); fix or delete that line") from None
    return out


# --------------------------------------------------------------------------------------------- YAML
class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's core schema for plain scalars: ``1e-3`` is a number (YAML 1.1 leaves it
    text), only ``true``/``false`` are booleans (not ``yes``/``no``/``on``/``off``), ``017`` is seventeen (not
    octal fifteen), ``1:30`` and ``2026-12-05`` stay text (not ninety and a date)."""


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    sign, digits = (-1, text[1:]) if text[0] == "-" else (1, text.lstrip("+"))
    if digits[:2] in ("0o", "0x"):
        return sign * int(digits[2:], 8 if digits[1] == "o" else 16)
    return sign * int(digits)


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag.rsplit(":", 1)[-1] not in ("bool", "int", "float", "timestamp",
                                                                                "value")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YAML12 = (  # (tag, pattern, first characters), the core schema of YAML 1.2
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
              r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+.0123456789"),
)
_Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


class _YamlDumper(yaml.SafeDumper):
    """PyYAML's safe dumper that quotes a string which either YAML 1.1 or 1.2 would read as something else (``'yes'``,
    ``'1e-3'``), so what :func:`dump_yaml` writes reads back the same with :func:`load_yaml` and with any YAML
    reader."""


_YamlDumper.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeDumper.yaml_implicit_resolvers.items()}
for _tag, _pattern, _first in _YAML12:
    _Yaml12Loader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first))
    _YamlDumper.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first))


def load_yaml(text: str | bytes) -> Any:
    """Parse YAML text with YAML 1.2's scalars (see :class:`_Yaml12Loader`): the one reader of config files, ``--set``
    values, sweep grids and the app's text boxes. Raises ``yaml.YAMLError`` on bad YAML."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


def dump_yaml(obj: Any, *, flow: bool = False) -> str:
    """``obj`` as YAML in key order, block style (``flow=True``: one line, ``[1, 2]``, ``{a: 1}``); reads back equal
    with :func:`load_yaml` (and with any YAML 1.1 reader)."""
    text = yaml.dump(obj, Dumper=_YamlDumper, sort_keys=False, default_flow_style=flow, allow_unicode=True,
                     width=10**6 if flow else 80)
    return text.removesuffix("...\n")  # the end marker PyYAML puts after a lone scalar


# --------------------------------------------------------------------------------------------- status
def _proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (index 0 = state), or None off Linux / if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), used to tell a reused pid from the original."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def pid_alive(pid: int | None, start_time: int | None = None) -> bool:
    """True if ``pid`` is a live (non-zombie) process, and, when given, started at ``start_time``."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    fields = _proc_stat(pid)
    if fields is not None:
        if fields[0] in ("Z", "X"):
            return False
        if start_time is not None and len(fields) > 19 and int(fields[19]) != start_time:
            return False
    return True


@contextlib.contextmanager
def _status_lock(run_dir: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock, writes stay atomic
        yield
        return
    with open(run_dir / ".status.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_status(run_dir: str | os.PathLike) -> dict:
    """The content of ``status.json`` (empty dict if the run has none yet)."""
    path = Path(run_dir) / "status.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg})") from None


def write_status(run_dir: str | os.PathLike, **fields: Any) -> dict:
    """Merge ``fields`` into ``status.json`` (atomic, locked) and stamp ``updated``; returns the new status.

    Passing ``pid`` also records ``host`` and ``pid_start`` so :func:`run_state` can tell a dead or reused pid.
    """
    run_dir = Path(run_dir)
    state = fields.get("state")
    if state is not None and state not in STATES:
        raise ValueError(f"status state must be one of {', '.join(STATES)} (got {state!r})")
    now = time.time()
    with _status_lock(run_dir):
        status = read_status(run_dir)
        status.setdefault("created", now)
        if fields.get("pid"):
            fields.setdefault("host", socket.gethostname())
            fields.setdefault("pid_start", process_start_time(int(fields["pid"])))
        status.update(fields)
        status["updated"] = now
        atomic_write_json(run_dir / "status.json", status)
    return status


def run_state(run_dir: str | os.PathLike, status: Mapping[str, Any] | None = None) -> str:
    """The run's state; ``interrupted`` if it says queued/running but its process is gone; ``unknown`` if no status."""
    status = read_status(run_dir) if status is None else status
    state = status.get("state", "unknown")
    if state in ("queued", "running"):
        same_host = status.get("host") in (None, socket.gethostname())
        if same_host and not pid_alive(status.get("pid"), status.get("pid_start")):
            return "interrupted"
    return state


# --------------------------------------------------------------------------------------------- run contents
def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """One dict per finished epoch from ``metrics.jsonl`` (empty list before the first epoch)."""
    path = Path(run_dir) / "metrics.jsonl"
    return read_jsonl(path) if path.exists() else []


def read_config(run_dir: str | os.PathLike) -> dict:
    """The run's resolved config (``config.yaml``) as a plain dict."""
    path = Path(run_dir) / "config.yaml"
    with open(path, encoding="utf-8") as f:
        return load_yaml(f) or {}


def eval_paths(run_dir: str | os.PathLike, split: str, subset: str) -> tuple[Path, Path]:
    """Paths of the metrics JSON and predictions CSV of one split/subset under ``eval/``."""
    base = Path(run_dir) / "eval" / f"{split}_{subset}"
    return base.with_suffix(".json"), Path(f"{base}_predictions.csv")


def read_eval(run_dir: str | os.PathLike) -> dict[str, dict]:
    """Evaluation results keyed ``"<split>/<subset>"``: accuracy, mean_class_accuracy, macro_f1, confusion, ..."""
    out = {}
    folder = Path(run_dir) / "eval"
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        result = json.loads(path.read_text(encoding="utf-8"))
        out[f"{result['split']}/{result['subset']}"] = result
    return out


CALIBRATION = "calibration.json"
"""The file of a run that holds its fitted temperature (:func:`fer_core.evaluate.calibrate_model` writes it)."""


def calibration_path(run_dir: str | os.PathLike) -> Path:
    """``<run>/calibration.json``: the run's temperature, where and on how many faces it was fitted, the validation
    metrics before and after (it may not exist)."""
    return Path(run_dir) / CALIBRATION


def read_calibration(run_dir: str | os.PathLike) -> dict | None:
    """The run's ``calibration.json`` (None when the run has none: it was never temperature-scaled)."""
    path = calibration_path(run_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        found = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); fit it again with `python -m fer_core calibrate "
                         f"{Path(run_dir).name}`") from None
    if not isinstance(found, dict) or not isinstance(found.get("temperature"), int | float):
        raise ValueError(f"{path} has no numeric 'temperature'; fit it again with `python -m fer_core calibrate "
                         f"{Path(run_dir).name}`")
    return found


def read_predictions(run_dir: str | os.PathLike, split: str, subset: str) -> pd.DataFrame:
    """Per-sample predictions: index, label, pred, correct, confidence, prob_<class>..."""
    import pandas as pd

    path = eval_paths(run_dir, split, subset)[1]
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run `python -m fer_core evaluate {Path(run_dir).name}`")
    return pd.read_csv(path)


class RunList(list):
    """A list of run summaries (dicts) that also reports the folders it skipped in ``skipped``."""

    def __init__(self, rows: list[dict] = (), skipped: list[dict] | None = None):
        super().__init__(rows)
        self.skipped: list[dict] = skipped or []


def summarize_run(run_dir: str | os.PathLike) -> dict:
    """One row of :func:`list_runs` for one run folder; problems reading parts go in ``problem``."""
    run_dir = Path(run_dir)
    problems = []
    parts: dict[str, Any] = {}
    for label, reader, default in (("status", read_status, {}), ("config", read_config, {}),
                                   ("metrics", read_metrics, []), ("eval", read_eval, {})):
        try:
            parts[label] = reader(run_dir)
        except FileNotFoundError:
            parts[label] = default
        except Exception as err:  # noqa: BLE001 - a bad file must not hide the other runs
            parts[label] = default
            problems.append(f"{label}: {err}")
    status, config, metrics, evals = parts["status"], parts["config"], parts["metrics"], parts["eval"]
    val = [m["val_acc"] for m in metrics if isinstance(m.get("val_acc"), (int, float))]
    test_all = evals.get("test/all", {}).get("accuracy")
    return {
        "run_id": run_dir.name,
        "path": str(run_dir),
        "name": config.get("name", ""),
        "state": run_state(run_dir, status),
        "model": (config.get("model") or {}).get("name", ""),
        "dataset": (config.get("data") or {}).get("name", ""),
        "group": config.get("group"),
        "tags": config.get("tags") or {},
        "created": status.get("created", run_dir.stat().st_mtime),
        "epoch": status.get("epoch", metrics[-1].get("epoch") if metrics else 0),
        "epochs": status.get("epochs", (config.get("train") or {}).get("epochs")),
        "best_val_acc": max(val) if val else None,
        "test_acc": test_all,
        "subset_acc": {key.split("/", 1)[1]: r.get("accuracy") for key, r in evals.items()
                       if key.startswith("test/") and key != "test/all"},
        "error": status.get("error"),
        "pruned": status.get("pruned"),  # the epoch after which a search's pruner stopped the run
        "slurm_job": status.get("slurm_job"),  # the SLURM job that trains the run (backend slurm)
        "problem": "; ".join(problems) or None,
    }


def list_runs(root: str | os.PathLike | None = None, *, group: str | None = None) -> RunList:
    """Summaries of every run under ``root`` (default :func:`runs_dir`), newest first; only ``group``'s if given.

    Folders that are not runs (no ``status.json`` nor ``config.yaml``), and links to folders elsewhere, are left
    out and listed in ``result.skipped`` as ``{"path", "reason"}``.
    """
    base = Path(root).expanduser().resolve() if root is not None else runs_dir()
    rows, skipped = [], []
    for path in sorted(base.iterdir()) if base.is_dir() else []:
        if not path.is_dir() or path.name.startswith("."):
            continue
        if not _RUN_ID_RE.match(path.name):
            skipped.append({"path": str(path), "reason": "folder name is not a valid run id"})
        elif path.resolve().parent != base:  # a link: runs are read only from inside the runs folder
            skipped.append({"path": str(path), "reason": f"a link to {path.resolve()}, outside the runs folder"})
        elif not (path / "status.json").exists() and not (path / "config.yaml").exists():
            skipped.append({"path": str(path), "reason": "no status.json or config.yaml"})
        else:
            rows.append(summarize_run(path))
    if group is not None:
        rows = [r for r in rows if r["group"] == group]
    rows.sort(key=lambda r: (r["created"], r["run_id"]), reverse=True)
    return RunList(rows, skipped)
