"""Start and stop training runs as background processes that the app (or a script) follows on disk.

The app never trains in its own process: :func:`launch_train` creates the run folder, writes ``config.yaml`` and
``status.json`` (``queued``, with the child's pid) and starts ``python -m fer_core train`` in its own session,
its output going to ``stdout.txt`` in the run folder. Everything after that is read from the folder with
``fer_core.io`` (``read_status``, ``run_state``, ``read_metrics``...). :func:`cancel_run` stops it.

:func:`launch_sweep` starts ``python -m fer_core sweep`` the same way; a sweep has no run folder of its own, so its
base config, ``sweep.json`` (pid, plan) and ``stdout.txt`` live in ``<runs>/.sweeps/<group>/`` (a dot folder, which
:func:`fer_core.io.list_runs` skips); :func:`read_sweep` and :func:`cancel_sweep` find it there. :func:`check_launch`
catches what the schema cannot see (a missing data folder or teacher run, no GPU) before anything starts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fer_core import io
from fer_core.config import Config, load_config

TERMINAL_STATES = ("done", "failed", "cancelled")


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    """``python -m fer_core <args>`` in its own session, output appended to ``log``, reaped by a daemon thread."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "fer_core", *args], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()  # no zombies
    return proc


def _start(run_dir: Path, args: list[str]) -> int:
    try:
        proc = _spawn(args, run_dir / "stdout.txt")
    except OSError as err:
        io.write_status(run_dir, state="failed", error=f"could not start the trainer: {err}")
        raise
    io.write_status(run_dir, pid=proc.pid)  # merges: never overwrites a state the child already wrote
    return proc.pid


def launch_train(config: str | os.PathLike | Mapping[str, Any] | Config, overrides: Iterable[str] = (),
                 run_id: str | None = None, root: str | os.PathLike | None = None) -> tuple[str, int]:
    """Validate ``config`` (+ ``overrides``), create the run and start its trainer in the background.

    Args:
        config: YAML path, dict or Config.
        overrides: ``key.sub=value`` strings, as ``--set`` on the command line.
        run_id: folder name to use (default: a fresh :func:`fer_core.io.new_run_id`).
        root: runs folder (default :func:`fer_core.io.runs_dir`).

    Returns:
        ``(run_id, pid)``; ``status.json`` already says ``queued`` with that pid.

    Raises:
        ConfigError: the config is invalid (nothing is created).
        FileExistsError: ``run_id`` is taken.
    """
    cfg = load_config(config, overrides)
    # the folder appears with its config and status already in it (see io.create_run_dir); a fresh id is drawn
    # again on the rare clash with a run started in the same second
    queued = {"config": cfg.to_yaml(), "state": "queued", "epoch": 0, "epochs": cfg.train.epochs, "error": None}
    run_dir = io.create_run_dir(run_id, root, **queued) if run_id else io.create_new_run_dir(cfg.name, root, **queued)
    run_id = run_dir.name
    pid = _start(run_dir, ["train", "--config", str(run_dir / "config.yaml"), "--run-id", run_id,
                           "--runs-dir", str(run_dir.parent)])
    return run_id, pid


def launch_resume(run_dir: str | os.PathLike, overrides: Iterable[str] = ()) -> int:
    """Continue an interrupted or cancelled run from its last checkpoint in the background; returns the pid.

    ``overrides`` may change the config, e.g. ``train.epochs=30`` to train a finished run for longer.
    """
    run_dir = Path(run_dir)
    state = io.run_state(run_dir)
    if state in ("queued", "running"):
        raise RuntimeError(f"run {run_dir.name} is {state}; cancel it before resuming")
    if not resumable(run_dir):
        raise FileNotFoundError(f"run {run_dir.name} has no checkpoint to resume from (it never finished an epoch)")
    io.write_status(run_dir, state="queued", error=None)
    args = ["train", "--resume", str(run_dir)]
    for item in overrides:
        args += ["--set", item]
    return _start(run_dir, args)


def resumable(run_dir: str | os.PathLike) -> bool:
    """Whether the run has a checkpoint :func:`launch_resume` can continue from (it finished an epoch)."""
    return (Path(run_dir) / "checkpoints" / "last_state.pt").exists()


def _signal_run(pid: int, sig: int) -> None:
    try:
        if os.getpgid(pid) == pid:  # started by launch_*: the trainer leads its own process group
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _stop(pid: int, start: Any, sig: int, wait: float) -> None:
    """Send ``sig`` to a run's (or sweep's) process group, and SIGKILL if it is still alive ``wait`` seconds later."""
    _signal_run(pid, sig)
    deadline = time.monotonic() + wait
    while io.pid_alive(pid, start) and time.monotonic() < deadline:
        time.sleep(0.1)
    if io.pid_alive(pid, start):
        _signal_run(pid, signal.SIGKILL)
        time.sleep(0.2)


def cancel_run(run_dir: str | os.PathLike, wait: float = 10.0) -> str:
    """Stop a queued or running run: SIGTERM its process group, SIGKILL after ``wait`` seconds; returns the state.

    The trainer answers SIGTERM by stopping at the next batch (everything up to the last finished epoch is
    saved) and writing ``cancelled``; a process killed before it could is marked ``cancelled`` here.
    """
    run_dir = Path(run_dir)
    status = io.read_status(run_dir)
    if io.run_state(run_dir, status) not in ("queued", "running"):
        return io.run_state(run_dir, status)
    host = status.get("host")
    if host not in (None, socket.gethostname()):
        raise RuntimeError(f"run {run_dir.name} runs on host {host}; cancel it there")
    pid, start = status.get("pid"), status.get("pid_start")
    if pid and io.pid_alive(pid, start):
        _stop(pid, start, signal.SIGTERM, wait)
    if io.read_status(run_dir).get("state") in ("queued", "running"):
        io.write_status(run_dir, state="cancelled", finished=time.time())
    return io.run_state(run_dir)


# --------------------------------------------------------------------------------------------- checks
def available_devices() -> list[str]:
    """The training devices this machine has: ``cpu``, then ``cuda`` and ``cuda:N`` for each GPU torch sees."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["cpu"] + (["cuda"] if count else []) + [f"cuda:{i}" for i in range(count)]


def check_launch(cfg: Config, root: str | os.PathLike | None = None) -> list[str]:
    """What would make ``cfg`` fail at once although the schema accepts it, one line per problem naming the key.

    Checks that a data set which reads files has an existing ``data.root``, that a teacher run (pseudo labels, or
    label distributions from a teacher) is a finished run under ``root``, that a ``cuda`` device exists here, that
    the model accepts its ``model.options`` (built on the ``meta`` device, as a sweep's plan does) and has what the
    method needs (SCN's importance weights, the region-biased loss's part attention), and the data set's options
    (the names each data set declares; SynthFACS's values too).
    The app and ``python -m fer_core train`` both refuse a run that fails it before creating its folder.
    """
    from fer_core.data import dataset_info, resolve_root, unknown_options
    from fer_core.sweep import check_model

    problems = []
    option_problem = unknown_options(cfg.data.name, cfg.data.options)
    if option_problem:
        problems.append(f"data.options: {option_problem}")
    if dataset_info(cfg.data.name)["needs_root"]:
        folder = resolve_root(cfg.data.name, cfg.data.root)
        if folder is None:
            problems.append(f"data.root: {cfg.data.name} reads its files from disk; give the folder that holds them "
                            f"(or set FER_DATA to a folder with a {cfg.data.name}/ sub-folder)")
        elif not folder.is_dir():
            problems.append(f"data.root: the folder {folder} does not exist")
    method = cfg.train.method
    teacher = getattr(method, "teacher_run", None)
    if getattr(method, "source", None) == "teacher" and not teacher:
        problems.append("train.method.teacher_run: label distributions from a teacher need a teacher run")
    if teacher:
        try:
            teacher_dir = io.resolve_run_dir(teacher, root)
        except (FileNotFoundError, ValueError) as err:
            problems.append(f"train.method.teacher_run: {err}")
        else:
            state = io.run_state(teacher_dir)
            if state != "done":
                problems.append(f"train.method.teacher_run: run {teacher_dir.name} is {state}; a teacher must be a "
                                "finished (done) run")
    if cfg.train.device not in available_devices():
        count = len(available_devices()) - 1
        problems.append(f"train.device: {cfg.train.device} is not available here (torch sees {count} GPU(s)); "
                        "use cpu")
    model_problem = check_model(cfg)
    if model_problem:
        problems.append(f"model.options: {model_problem}")
    wants = ("train.method: scn needs a model with importance weights (model.name: scn)"
             if cfg.train.method.name == "scn" else
             "train.region_bias needs a model with part attention (model.name: region_attention)"
             if cfg.train.region_bias.weight > 0 else None)
    if wants and not model_problem:
        import torch

        from fer_core.models import create_model

        m = cfg.model
        try:
            with torch.device("meta"):  # no memory, no weights: only which forward passes the model has
                model = create_model(m.name, num_classes=7, pretrained=False, input_size=m.input_size, **m.options)
        except Exception:  # noqa: BLE001 - check_model reports bad options; the run itself reports the rest
            model = None
        if model is not None and not hasattr(model, "forward_attention"):
            problems.append(f"{wants}; model.name is {m.name}")
    if cfg.data.name == "synthfaces":
        from fer_core.data.synthfaces import SynthConfig

        try:
            SynthConfig.from_options(**cfg.data.options)
        except (TypeError, ValueError) as err:
            problems.append(f"data.options: {err}")
    return problems


# --------------------------------------------------------------------------------------------- sweeps
SWEEPS_FOLDER = ".sweeps"
"""Sub-folder of the runs folder holding one folder per launched sweep: ``config.yaml``, ``sweep.json``,
``stdout.txt``."""


def sweep_path(group: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of the sweep ``group`` (``<runs>/.sweeps/<group>``); the group must be a valid folder name."""
    base = Path(root).expanduser().resolve() if root is not None else io.runs_dir()
    try:
        io.check_run_id(group)
    except ValueError as err:
        raise ValueError(f"group: {str(err).replace('run id', 'group name', 2)}") from None
    return base / SWEEPS_FOLDER / group


def launch_sweep(config: str | os.PathLike | Mapping[str, Any] | Config, grid: Iterable[str] = (),
                 variants: Iterable[str] = (), *, group: str | None = None, parallel: int = 1,
                 root: str | os.PathLike | None = None) -> tuple[str, int]:
    """Plan a sweep (every point validated first), then start ``python -m fer_core sweep`` in the background.

    Args:
        config: the base config (YAML path, dict or Config).
        grid: ``key=v1,v2,...`` items, as ``--grid`` (ranges ``start:stop[:step]`` too).
        variants: ``name:key=value,...`` items, as ``--variant``.
        group: the group id tying the runs together (default ``<name>-sweep-<time>``).
        parallel: runs at once.
        root: runs folder (default :func:`fer_core.io.runs_dir`).

    Returns:
        ``(group, pid)`` of the sweep process. Its runs appear in the runs folder one by one as it starts them
        (``io.list_runs(root, group=group)``); :func:`read_sweep` tells whether it is still going.

    Raises:
        ConfigError: a grid item or a point is invalid (nothing is started).
        ValueError: ``parallel`` < 1 or a group name that is no valid folder name.
        FileExistsError: a sweep of that group was already launched into ``root``.
    """
    from fer_core.sweep import parse_grid, parse_variant, plan_sweep

    grid, variants = list(grid), list(variants)
    if parallel < 1:
        raise ValueError(f"parallel must be >= 1 (got {parallel})")
    base = load_config(config)
    points = plan_sweep(base, parse_grid(grid), variants=[parse_variant(v) for v in variants], group=group)
    group = points[0][1].group
    folder = sweep_path(group, root)
    if folder.exists():
        raise FileExistsError(f"a sweep of group {group} was already launched ({folder}); choose another group name")
    folder.mkdir(parents=True)
    base_file = io.atomic_write_text(folder / "config.yaml", base.model_copy(update={"group": group}).to_yaml())
    args = ["sweep", "--config", str(base_file), "--group", group, "--parallel", str(parallel),
            "--runs-dir", str(folder.parent.parent)]
    for item in grid:
        args += ["--grid", item]
    for item in variants:
        args += ["--variant", item]
    proc = _spawn(args, folder / "stdout.txt")
    io.atomic_write_json(folder / "sweep.json", {
        "group": group, "pid": proc.pid, "pid_start": io.process_start_time(proc.pid), "host": socket.gethostname(),
        "created": time.time(), "grid": grid, "variants": variants, "parallel": parallel,
        "planned": [{"name": cfg.name, "tags": tags} for tags, cfg in points],
    })
    return group, proc.pid


def read_sweep(group: str, root: str | os.PathLike | None = None) -> dict | None:
    """``sweep.json`` of a sweep launched with :func:`launch_sweep` plus ``running`` (its process is alive), or
    None for a group that was not launched that way (e.g. a sweep started from a shell)."""
    path = sweep_path(group, root) / "sweep.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    same_host = info.get("host") in (None, socket.gethostname())
    info["running"] = same_host and io.pid_alive(info.get("pid"), info.get("pid_start"))
    return info


def cancel_sweep(group: str, root: str | os.PathLike | None = None, wait: float = 15.0) -> dict[str, str]:
    """Stop a sweep: no more of its runs start, and those queued or running are cancelled.

    The sweep process gets SIGINT (it then cancels the runs it started and exits), SIGKILL after ``wait``
    seconds; any run of the group still queued or running after that is cancelled here with :func:`cancel_run`.

    Returns:
        ``{run_id: state}`` of the group's runs afterwards.
    """
    info = read_sweep(group, root)
    if info and info["running"]:
        _stop(info["pid"], info.get("pid_start"), signal.SIGINT, wait)
    states = {}
    for run in io.list_runs(root, group=group):
        if run["state"] in ("queued", "running"):
            cancel_run(run["path"])
        states[run["run_id"]] = io.run_state(run["path"])
    return states
