"""Start and stop training runs as background processes that the app (or a script) follows on disk.

The app never trains in its own process: :func:`launch_train` creates the run folder, writes ``config.yaml`` and
``status.json`` (``queued``, with the child's pid) and starts ``python -m fer_core train`` in its own session,
its output going to ``stdout.txt`` in the run folder. Everything after that is read from the folder with
``fer_core.io`` (``read_status``, ``run_state``, ``read_metrics``...). :func:`cancel_run` stops it.
"""

from __future__ import annotations

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


def _start(run_dir: Path, args: list[str]) -> int:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(run_dir / "stdout.txt", "ab") as out:
        try:
            proc = subprocess.Popen([sys.executable, "-m", "fer_core", *args], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        except OSError as err:
            io.write_status(run_dir, state="failed", error=f"could not start the trainer: {err}")
            raise
    io.write_status(run_dir, pid=proc.pid)  # merges: never overwrites a state the child already wrote
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()  # no zombies
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
    run_id = run_id or io.new_run_id(cfg.name)
    run_dir = io.create_run_dir(run_id, root)
    io.atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    io.write_status(run_dir, state="queued", epoch=0, epochs=cfg.train.epochs, error=None)
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
    if not (run_dir / "checkpoints" / "last_state.pt").exists():
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
        _signal_run(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while io.pid_alive(pid, start) and time.monotonic() < deadline:
            time.sleep(0.1)
        if io.pid_alive(pid, start):
            _signal_run(pid, signal.SIGKILL)
            time.sleep(0.2)
    if io.read_status(run_dir).get("state") in ("queued", "running"):
        io.write_status(run_dir, state="cancelled", finished=time.time())
    return io.run_state(run_dir)
