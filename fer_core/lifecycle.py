"""The lifecycle of runs and sweeps, in one place: create or claim a run folder, start, follow, cancel, resume.

The CLI and the app both call these; the run folder stays the only interface (docs/CONTRACTS.md). Where a run's
process lives is a detail behind them: today a child process of this machine (``python -m fer_core train`` in its
own session, its output in the run's ``stdout.txt``), started by the app or by a sweep, or the ``train`` command's
own process, which claims the folder (:func:`open_run`).

* :func:`create_run` makes a queued run folder (``config.yaml`` and ``status.json`` inside when it appears);
  :func:`open_run` creates or claims the folder of the run this process trains; :func:`check_launch` catches what
  the schema cannot see (a missing data folder or teacher run, no GPU, a model the method cannot use) before
  anything exists.
* :func:`launch_train` creates a run and starts its trainer in the background; :func:`launch_resume` continues a
  stopped one from its last checkpoint; :func:`cancel_run` stops one.
* :func:`run_sweep` trains the points of a sweep (:mod:`fer_core.sweep` plans them), ``parallel`` at a time, in
  this process's foreground; :func:`launch_sweep` starts that in the background (the app), keeping the sweep's
  plan and output in ``<runs>/.sweeps/<group>/`` (a dot folder, which :func:`fer_core.io.list_runs` skips);
  :func:`read_sweep` and :func:`cancel_sweep` find it there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from fer_core import io
from fer_core.config import Config, ConfigError, load_config
from fer_core.runs import check_model, resumable
from fer_core.sweep import Variant, parse_grid, parse_variant, plan_sweep

TERMINAL_STATES = ("done", "failed", "cancelled")

ProgressFn = Callable[[dict[str, Any]], None]


class RunFolderError(ValueError):
    """A run folder this process may not train in (taken by another run), or no way to name one."""


# --------------------------------------------------------------------------------------------- processes
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


def queued_status(cfg: Config, **fields: Any) -> dict[str, Any]:
    """``status.json`` of a run that exists but has not started training: queued, epoch 0 of every stage's epochs."""
    return {"state": "queued", "epoch": 0, "epochs": cfg.train.total_epochs, "error": None, **fields}


def create_run(cfg: Config, run_id: str | None = None, root: str | os.PathLike | None = None, **status: Any) -> Path:
    """Create the folder of a new run of ``cfg``, queued: it appears with ``config.yaml`` and ``status.json`` already
    in it (:func:`fer_core.io.create_run_dir`). ``run_id`` None draws a fresh id (again on the rare clash with a run
    started in the same second); a given one that exists raises FileExistsError. ``status`` adds fields (``pid``)."""
    queued = {"config": cfg.to_yaml(), **queued_status(cfg, **status)}
    return io.create_run_dir(run_id, root, **queued) if run_id else io.create_new_run_dir(cfg.name, root, **queued)


def open_run(cfg: Config, run_id: str | None = None, root: str | os.PathLike | None = None, *,
             source: str | None = None) -> Path:
    """The folder of the run this process is about to train (the ``train`` command), created or claimed.

    A new run is checked (:func:`check_launch`) and created, naming this process as its trainer. A folder made for
    this process by :func:`launch_train` (``--run-id`` of a queued run with nothing trained, no other trainer named)
    is claimed; if its config fails the check, the run is marked failed before the error is raised. Under
    ``torchrun`` only rank 0 creates or claims; the other ranks need ``run_id`` and return its folder.

    Raises:
        ConfigError: the config fails :func:`check_launch` (``source`` names the file in the message).
        RunFolderError: ``run_id`` names a folder that is not this process's to train, or a rank other than 0 has
            no ``run_id``.
        ValueError: ``run_id`` is not a valid folder name.
    """
    rank = int(os.environ.get("RANK", "0"))
    run_dir, claimed = None, False
    if run_id:
        run_dir = io.run_path(run_id, root)
        claimed = rank == 0 and run_dir.exists()
        if claimed:
            status = io.read_status(run_dir)
            # queued, nothing trained yet, and no other process named as its trainer (a run being created by another
            # `train` at this very moment names its own pid)
            if status.get("state") != "queued" or (run_dir / "metrics.jsonl").exists() \
                    or status.get("pid") not in (None, os.getpid()):
                raise RunFolderError(f"run folder {run_dir} already exists; pick another --run-id or use --resume")
    elif rank != 0:
        raise RunFolderError("under torchrun give --run-id, so that every process trains the same run")
    problems = check_launch(cfg, root)
    if problems:  # what would fail at once although the schema accepts it: refused before any run starts
        if claimed:
            io.write_status(run_dir, state="failed", error="invalid config: " + "; ".join(problems),
                            finished=time.time())
        raise ConfigError(problems, source)
    if rank == 0 and not claimed:
        try:
            run_dir = create_run(cfg, run_id, root, pid=os.getpid())
        except FileExistsError as err:
            raise RunFolderError(f"{err}; pick another --run-id or use --resume") from None
    return run_dir


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
    run_dir = create_run(cfg, run_id, root)
    pid = _start(run_dir, ["train", "--config", str(run_dir / "config.yaml"), "--run-id", run_dir.name,
                           "--runs-dir", str(run_dir.parent)])
    return run_dir.name, pid


def submit_train(config: str | os.PathLike | Mapping[str, Any] | Config, overrides: Iterable[str] = (),
                 run_id: str | None = None, root: str | os.PathLike | None = None,
                 slurm: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """Validate ``config`` (+ ``overrides``), create the run and submit it as a SLURM job (:mod:`fer_core.slurm`).

    The config is checked as for a local run, except the device, which is the compute node's. If ``sbatch``
    refuses the job, the run folder is removed again (no half-made run) and :class:`fer_core.slurm.SlurmError`
    says what SLURM said.

    Args:
        config, overrides, run_id, root: as for :func:`launch_train`.
        slurm: SLURM options over the defaults file's (``{"partition": "gpu", "gpus": 1, "time": "2:00:00"}``).

    Returns:
        ``(run_id, job id)``; ``status.json`` already says ``queued`` with the job id (``slurm_job``).
    """
    from fer_core import slurm as slurm_backend

    options = slurm_backend.resolve_options(slurm)
    if not slurm_backend.available():
        raise slurm_backend.SlurmError("--backend slurm needs SLURM's sbatch on the PATH of this machine (a login "
                                       "node of the cluster); run locally without --backend slurm")
    cfg = load_config(config, overrides)
    problems = [p for p in check_launch(cfg, root) if not p.startswith("train.device:")]
    if problems:
        raise ConfigError(problems)
    run_dir = create_run(cfg, run_id, root, backend="slurm")
    try:
        job = slurm_backend.submit(run_dir, options)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    io.write_status(run_dir, slurm_job=job)
    return run_dir.name, job


def submit_sweep(base: Config, grid: Mapping[str, Sequence[Any]] | None = None, *,
                 variants: Sequence[Variant] | None = None, runs_root: str | os.PathLike | None = None,
                 group: str | None = None, parallel: int = 1,
                 slurm: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """Validate every point (:func:`plan_sweep`), create their runs and submit them as one SLURM job array that runs
    at most ``parallel`` at once. If ``sbatch`` refuses, every run folder it made is removed again.

    Returns:
        ``[(run_id, job id)]`` in plan order (job ids ``<array>_<index>``).
    """
    from fer_core import slurm as slurm_backend

    if parallel < 1:
        raise ValueError(f"parallel must be >= 1 (got {parallel})")
    options = slurm_backend.resolve_options(slurm)
    if not slurm_backend.available():
        raise slurm_backend.SlurmError("--backend slurm needs SLURM's sbatch on the PATH of this machine")
    points = plan_sweep(base, grid, variants=variants, group=group)
    root = Path(runs_root).expanduser().resolve() if runs_root is not None else io.runs_dir()
    group = points[0][1].group
    logs = sweep_path(group, root) / "slurm"
    run_dirs: list[Path] = []
    try:
        for _, cfg in points:
            run_dirs.append(create_run(cfg, None, root, backend="slurm", slurm_logs=str(logs)))
        jobs = slurm_backend.submit_array(run_dirs, options, logs, group, parallel)
    except BaseException:
        for run_dir in run_dirs:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    for run_dir, job in zip(run_dirs, jobs, strict=True):
        io.write_status(run_dir, slurm_job=job)
    return [(d.name, j) for d, j in zip(run_dirs, jobs, strict=True)]


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
    if status.get("slurm_job"):  # a SLURM job: scancel, then wait for its trainer to write the end
        from fer_core import slurm

        slurm.cancel(status["slurm_job"])
        deadline = time.monotonic() + wait
        while io.read_status(run_dir).get("state") in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.2)
        if io.read_status(run_dir).get("state") in ("queued", "running"):  # still pending, or killed outright
            io.write_status(run_dir, state="cancelled", finished=time.time())
        return io.run_state(run_dir)
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
    the model accepts its ``model.options`` and has what the method needs, and that ``model.init_from`` is a
    finished run under ``root`` (or a weights file) whose backbone fits (:func:`fer_core.runs.check_model`, as a
    sweep's plan does), and the data set's options (the names each data set declares; the values that choose its
    classes, and every SynthFACS value).
    The app and ``python -m fer_core train`` both refuse a run that fails it before creating its folder.
    """
    from fer_core.data import dataset_classes, dataset_info, resolve_root, unknown_options

    problems = []
    option_problem = unknown_options(cfg.data.name, cfg.data.options)
    if option_problem:
        problems.append(f"data.options: {option_problem}")
    if dataset_info(cfg.data.name).needs_root:
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
    try:  # the classes a data set has with these options (SynthFACS checks every option's value here)
        dataset_classes(cfg.data.name, cfg.data.options)
    except (TypeError, ValueError) as err:
        problems.append(f"data.options: {err}")
    problems += check_model(cfg, root=root)
    return problems


# --------------------------------------------------------------------------------------------- sweeps
@contextlib.contextmanager
def _threads_per_run(parallel: int, device: str) -> Iterator[None]:
    """With several CPU runs at once, give each child its share of the cores (unless OMP_NUM_THREADS is set)."""
    if parallel <= 1 or device != "cpu" or "OMP_NUM_THREADS" in os.environ:
        yield
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ["OMP_NUM_THREADS"] = str(max(1, cores // parallel))
    try:
        yield
    finally:
        os.environ.pop("OMP_NUM_THREADS", None)


def run_sweep(base: Config, grid: Mapping[str, Sequence[Any]] | None = None, *,
              variants: Sequence[Variant] | None = None, runs_root: str | os.PathLike | None = None,
              group: str | None = None, parallel: int = 1, progress: ProgressFn | None = None,
              poll_interval: float = 0.5) -> list[str]:
    """Validate every point (:func:`plan_sweep`), then train them, ``parallel`` at a time, as child processes.

    Each run is started with :func:`launch_train` (a child process, as the app does) and followed through its
    run folder (:func:`fer_core.io.run_state`). A failed run does not stop the sweep; its state is in its folder.
    If this function is interrupted (Ctrl-C, an exception in ``progress``), the runs it started are cancelled.

    Args:
        base, grid, variants, group: as for :func:`plan_sweep`.
        runs_root: runs folder (default :func:`fer_core.io.runs_dir`).
        parallel: how many runs at once (>= 1). CPU runs then get ``cores // parallel`` threads each
            (``OMP_NUM_THREADS``, unless set).
        progress: called with event dicts: ``{"event": "plan", "group", "points": [tags...]}``; ``start``
            ``{index, total, run_id, tags}``; ``epoch`` ``{index, total, run_id, epoch, epochs}``; ``end``
            ``{index, total, run_id, state, error}``; ``done`` ``{group, run_ids, states}``.
        poll_interval: seconds between looks at the run folders.

    Returns:
        The run ids, in plan order.
    """
    if parallel < 1:
        raise ValueError(f"parallel must be >= 1 (got {parallel})")
    points = plan_sweep(base, grid, variants=variants, group=group)
    emit = progress or (lambda event: None)
    root = Path(runs_root).expanduser().resolve() if runs_root is not None else io.runs_dir()
    total = len(points)
    emit({"event": "plan", "group": points[0][1].group, "points": [tags for tags, _ in points]})
    run_ids: list[str | None] = [None] * total
    states: dict[int, str] = {}
    active: dict[int, tuple[Path, int]] = {}  # index -> (run folder, last epoch seen)
    pending = list(range(total))
    try:
        while pending or active:
            while pending and len(active) < parallel:
                index = pending.pop(0)
                tags, cfg = points[index]
                with _threads_per_run(parallel, cfg.train.device):
                    run_id, _ = launch_train(cfg, root=root)
                run_ids[index] = run_id
                active[index] = (root / run_id, 0)
                emit({"event": "start", "index": index, "total": total, "run_id": run_id, "tags": tags})
            time.sleep(poll_interval)
            for index, (run_dir, seen) in list(active.items()):
                status = io.read_status(run_dir)
                epoch = status.get("epoch") or 0
                if epoch != seen:
                    active[index] = (run_dir, epoch)
                    emit({"event": "epoch", "index": index, "total": total, "run_id": run_dir.name,
                          "epoch": epoch, "epochs": status.get("epochs")})
                state = io.run_state(run_dir, status)
                if state not in ("queued", "running"):
                    del active[index]
                    states[index] = state
                    emit({"event": "end", "index": index, "total": total, "run_id": run_dir.name, "state": state,
                          "error": status.get("error")})
    except BaseException:
        for run_dir, _ in active.values():
            with contextlib.suppress(Exception):
                cancel_run(run_dir)
        raise
    ids = [rid for rid in run_ids if rid is not None]
    emit({"event": "done", "group": points[0][1].group, "run_ids": ids,
          "states": [states.get(i, "unknown") for i in range(total)]})
    return ids


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
