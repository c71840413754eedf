"""The SLURM backend: a run trains as a SLURM job (submitted with ``submitit``) in its run folder on a shared file
system, which stays the contract: the job writes ``status.json``, ``metrics.jsonl``, checkpoints and ``eval/`` as
a local run does.

    python -m fer_core train --config C --backend slurm --slurm partition=gpu,gpus=1,time=2:00:00

- Options (:class:`SlurmOptions`): ``partition``, ``time`` (``H:MM:SS``, ``D-HH:MM:SS`` or minutes), ``gpus``
  (per node), ``cpus`` (per task), ``mem`` (``16G``), ``nodes``, ``tasks`` (per node), ``account``, ``qos``,
  ``constraint``, ``exclude``. Defaults come from ``$FER_SLURM_CONFIG`` or ``~/.config/fer_lab/slurm.yaml`` (the
  same keys), and ``--slurm k=v,...`` overrides them per run.
- The run folder is created (queued) before ``sbatch``; if ``sbatch`` refuses the job (a wrong partition, a time
  over the partition's limit...) the folder is removed again and the error names what SLURM said and the
  partitions ``sinfo`` reports. The job id goes into ``status.json`` (``slurm_job``); submitit's files (the pickled
  job, the job's stdout and stderr) into ``<run>/slurm/``.
- The job (:class:`TrainJob`) trains the run, or resumes it from its last checkpoint when it has one: a job that
  SLURM requeues (``scontrol requeue``, a preemption, a node lost) goes on from its last finished epoch and ends
  with the metrics an uninterrupted run has. On the signal SLURM sends before a time limit or preemption,
  submitit requeues the job itself (``TrainJob.checkpoint``).
- :func:`reconcile` compares a queued or running run with what SLURM knows of its job: a job that is no longer
  queued or running while the run folder never recorded an end (it died before writing anything, its node was
  lost, it hit its time limit without being requeued) marks the run failed, with SLURM's state and the job's
  stderr file named, so no run stays "running" forever. Cancelling a SLURM run is ``scancel``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fer_core import io

ACTIVE_JOB_STATES = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                     "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING")
"""SLURM job states in which the job may still train the run."""
DEFAULTS_ENV = "FER_SLURM_CONFIG"


class SlurmError(RuntimeError):
    """SLURM refused or lost a job; the message says what SLURM said."""


class SlurmOptions(BaseModel):
    """What a SLURM job asks for (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    partition: str | None = None
    time: int = Field(default=60, gt=0, description="minutes")
    gpus: int | None = Field(default=None, ge=0)
    cpus: int | None = Field(default=None, gt=0)
    mem: str | None = None
    nodes: int = Field(default=1, gt=0)
    tasks: int = Field(default=1, gt=0)
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    exclude: str | None = None

    @field_validator("time", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        return parse_time(value) if isinstance(value, str) else value

    @field_validator("mem")
    @classmethod
    def _mem(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\d+[KMGT]?B?", value, flags=re.IGNORECASE):
            raise ValueError(f"{value!r} is not a memory size such as 16G or 4000M")
        return value


def parse_time(text: str) -> int:
    """SLURM's time formats (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``) in minutes,
    rounded up."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a SLURM time such as 90, 2:00:00 or 1-12:00:00")
    days, a, b, c = match.groups()
    parts = [int(a), *(int(x) for x in (b, c) if x is not None)]
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = int(days) * 86400 + parts[0] * 3600 + (parts[1] * 60 if len(parts) > 1 else 0) + \
            (parts[2] if len(parts) > 2 else 0)
    elif len(parts) == 1:  # MM
        seconds = parts[0] * 60
    elif len(parts) == 2:  # MM:SS
        seconds = parts[0] * 60 + parts[1]
    else:  # HH:MM:SS
        seconds = parts[0] * 3600 + parts[1] * 60 + parts[2]
    return max(1, -(-seconds // 60))


def parse_options(items: Iterable[str] = ()) -> dict[str, str]:
    """``["partition=gpu,gpus=1", "time=2:00:00"]`` (``--slurm``, repeatable, comma-separated) as a dict."""
    out: dict[str, str] = {}
    for item in items:
        for part in filter(None, (p.strip() for p in item.split(","))):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"--slurm {part!r}: give key=value (e.g. partition=gpu,gpus=1,time=2:00:00)")
            out[key.strip()] = value.strip()
    return out


def defaults_path() -> Path:
    return Path(os.environ.get(DEFAULTS_ENV) or Path.home() / ".config" / "fer_lab" / "slurm.yaml").expanduser()


def resolve_options(overrides: Mapping[str, Any] | None = None) -> SlurmOptions:
    """The defaults file's options with ``overrides`` on top, validated; errors name the file or the key."""
    path = defaults_path()
    base: dict[str, Any] = {}
    if path.exists():
        loaded = io.load_yaml(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, Mapping):
            raise ValueError(f"{path}: give a mapping of SLURM options (partition: gpu, time: 2:00:00, ...)")
        base = dict(loaded)
    try:
        return SlurmOptions(**{**base, **dict(overrides or {})})
    except ValidationError as err:
        where = f" (defaults from {path})" if base else ""
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '?'}: {e['msg']}" for e in err.errors())
        raise ValueError(f"SLURM options{where}: {problems}") from None


def available() -> bool:
    """Whether this machine can submit SLURM jobs (``sbatch`` on the PATH)."""
    return shutil.which("sbatch") is not None


def _run(args: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def partitions() -> list[str]:
    """The partitions ``sinfo`` reports (the default one first, without its ``*``)."""
    out = _run(["sinfo", "-h", "-o", "%P"])
    if out.returncode:
        raise SlurmError(f"sinfo failed: {out.stderr.strip() or out.stdout.strip()}")
    names = [n.strip() for n in out.stdout.split() if n.strip()]
    names.sort(key=lambda n: not n.endswith("*"))
    return list(dict.fromkeys(n.rstrip("*") for n in names))


def job_states(job_ids: Iterable[str]) -> dict[str, str]:
    """SLURM's state of each job (``PENDING``, ``RUNNING``, ``COMPLETED``, ``FAILED``...), one ``squeue`` call for
    the jobs SLURM still queues and ``scontrol`` for the ones that ended; ``UNKNOWN`` for a job SLURM has forgotten."""
    ids = [str(j) for j in job_ids if j]
    if not ids:
        return {}
    found: dict[str, str] = {}
    out = _run(["squeue", "-h", "-o", "%i %T", "-j", ",".join(ids)])
    for line in out.stdout.splitlines():
        job, _, state = line.strip().partition(" ")
        if job in ids:
            found[job] = state
    for job in ids:
        if job not in found:
            shown = _run(["scontrol", "show", "job", job, "-o"])
            match = re.search(r"JobState=(\S+)", shown.stdout)
            found[job] = match.group(1) if match else "UNKNOWN"
    return found


_SEEN: dict[str, tuple[float, str]] = {}


def cached_job_states(job_ids: Iterable[str], max_age: float = 15.0) -> dict[str, str]:
    """:func:`job_states`, asking SLURM at most once per ``max_age`` seconds for a job (a page that reruns every
    second does not call ``squeue`` every second)."""
    ids = [str(j) for j in job_ids if j]
    now = time.monotonic()
    stale = [j for j in ids if j not in _SEEN or now - _SEEN[j][0] > max_age]
    if stale and available():
        _SEEN.update({j: (now, state) for j, state in job_states(stale).items()})
    return {j: _SEEN[j][1] for j in ids if j in _SEEN}


def refresh(rows: list[dict], max_age: float = 15.0) -> list[dict]:
    """Run summaries (``io.list_runs``) with SLURM's view added to the queued or running SLURM runs: ``queue`` is
    the job's state, and a run whose job is gone is reconciled (marked failed, :func:`reconcile`) first."""
    # ("interrupted": the folder says running, and its trainer's process on this host is gone)
    active = [r for r in rows if r.get("slurm_job") and r.get("state") in ("queued", "running", "interrupted")]
    states = cached_job_states([r["slurm_job"] for r in active], max_age) if active else {}
    for row in active:
        state = states.get(str(row["slurm_job"]))
        if state is None:
            continue
        row["queue"] = state
        if state not in ACTIVE_JOB_STATES:
            row["state"] = reconcile(row["path"], state)
        elif row["state"] == "interrupted":  # the job's pid is unset while it waits (or on another node): the
            row["state"] = io.read_status(row["path"]).get("state", "queued")  # folder's word, not the pid's
    return rows


def _executor(folder: Path, options: SlurmOptions, name: str, array_parallelism: int | None = None):
    import submitit

    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=3)
    params: dict[str, Any] = {"job_name": name, "time": options.time, "nodes": options.nodes,
                              "ntasks_per_node": options.tasks, "signal_delay_s": 120,
                              "additional_parameters": {"requeue": True}}
    if array_parallelism is not None:
        params["array_parallelism"] = array_parallelism
    for key, param in (("partition", "partition"), ("gpus", "gpus_per_node"), ("cpus", "cpus_per_task"),
                       ("mem", "mem"), ("account", "account"), ("qos", "qos"), ("constraint", "constraint"),
                       ("exclude", "exclude")):
        if getattr(options, key) is not None:
            params[param] = getattr(options, key)
    executor.update_parameters(**params)
    return executor


def _refused(err: Exception) -> SlurmError:
    """What ``sbatch`` said when it refused (submitit raises its CalledProcessError / FailedJobError)."""
    said = getattr(err, "stderr", None) or getattr(err, "output", None) or str(err)
    said = said.decode() if isinstance(said, bytes) else str(said)
    try:
        known = ", ".join(partitions())
    except (SlurmError, OSError, subprocess.SubprocessError):
        known = "unknown (sinfo failed)"
    return SlurmError(f"sbatch refused the job: {said.strip().splitlines()[-1] if said.strip() else err}. "
                      f"Partitions here: {known}")


def submit(run_dir: Path, options: SlurmOptions) -> str:
    """Submit the job that trains ``run_dir`` (created and queued); returns the job id. submitit's files go into
    ``<run>/slurm/``.

    Raises:
        SlurmError: ``sbatch`` refused the job (its message, and the partitions here).
    """
    executor = _executor(run_dir / "slurm", options, run_dir.name)
    try:
        job = executor.submit(TrainJob(str(run_dir)))
    except Exception as err:
        raise _refused(err) from None
    return str(job.job_id)


def submit_array(run_dirs: list[Path], options: SlurmOptions, folder: Path, name: str, parallel: int) -> list[str]:
    """Submit one job array whose tasks train ``run_dirs`` (created and queued), at most ``parallel`` at once;
    returns each run's job id (``<array>_<index>``). submitit's files go into ``folder``.

    Raises:
        SlurmError: ``sbatch`` refused the array.
    """
    executor = _executor(folder, options, name, array_parallelism=parallel)
    try:
        with executor.batch():  # one sbatch --array; each task its own (checkpointable) TrainJob
            jobs = [executor.submit(TrainJob(str(d))) for d in run_dirs]
    except Exception as err:
        raise _refused(err) from None
    return [str(job.job_id) for job in jobs]


def restart_count(job_id: str) -> int:
    """How often SLURM has restarted a job (``Restarts`` of ``scontrol show job``; a requeue adds one at once)."""
    out = _run(["scontrol", "show", "job", str(job_id), "-o"])
    match = re.search(r"\bRestarts=(\d+)", out.stdout)
    return int(match.group(1)) if match else 0


def cancel(job_id: str) -> None:
    """``scancel`` a job (SLURM sends it SIGTERM: the trainer stops at its next batch and writes ``cancelled``)."""
    out = _run(["scancel", str(job_id)])
    if out.returncode:
        raise SlurmError(f"scancel {job_id} failed: {out.stderr.strip()}")


def reconcile(run_dir: str | os.PathLike, state: str | None = None) -> str:
    """Mark a queued or running SLURM run failed when its job is gone without the run recording an end; returns
    the run's state (see the module docstring). ``state``: SLURM's state of the job when already known."""
    run_dir = Path(run_dir)
    status = io.read_status(run_dir)
    job = status.get("slurm_job")
    current = status.get("state")
    if not job or current not in ("queued", "running"):
        return io.run_state(run_dir, status)
    state = state or job_states([job]).get(str(job), "UNKNOWN")
    if state in ACTIVE_JOB_STATES:
        return current
    errors = sorted(Path(status.get("slurm_logs") or run_dir / "slurm").glob(f"{job}_*log.err"))
    where = f"; its stderr: {errors[-1]}" if errors else ""
    what = "before the trainer wrote anything" if current == "queued" and not (run_dir / "metrics.jsonl").exists() \
        else "without the trainer writing the run's end"
    io.write_status(run_dir, state="failed", error=f"SLURM job {job} ended {state} {what}{where}")
    return "failed"


def _ignore_early_warning() -> None:
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # (in the trainer's child process, before it starts Python)


class TrainJob:
    """What a SLURM job runs: ``python -m fer_core train`` on its run folder (a child process), resuming when the
    folder has a checkpoint (a requeued job). Checkpointable for submitit: on SLURM's signal before a time limit or a
    preemption, submitit requeues the same job, which resumes."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir

    def __call__(self) -> int:
        from fer_core.runs import resumable

        run_dir = Path(self.run_dir)
        job = os.environ.get("SLURM_JOB_ID")
        if os.environ.get("SLURM_ARRAY_JOB_ID"):  # a task of a sweep's array: the id squeue and scancel show
            job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        env = dict(os.environ)
        if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:  # one task per process of DistributedDataParallel
            import submitit

            world = submitit.helpers.TorchDistributedEnvironment()  # rank, size, master from SLURM's variables
            env.update(RANK=str(world.rank), WORLD_SIZE=str(world.world_size), LOCAL_RANK=str(world.local_rank),
                       LOCAL_WORLD_SIZE=str(world.local_world_size), MASTER_ADDR=world.master_addr,
                       MASTER_PORT=str(world.master_port))
        if env.get("RANK", "0") != "0":  # the other ranks train the run rank 0 claims or resumes
            args = ["train", "--resume", str(run_dir)] if resumable(run_dir) else \
                ["train", "--config", str(run_dir / "config.yaml"), "--run-id", run_dir.name, "--runs-dir",
                 str(run_dir.parent)]
            code = subprocess.run([sys.executable, "-m", "fer_core", *args], check=False, env=env,
                                  preexec_fn=_ignore_early_warning).returncode
            if code:
                raise SlurmError(f"rank {env['RANK']}: python -m fer_core {' '.join(args)} exited {code}")
            return code
        if resumable(run_dir):
            # a requeued job: the process named in status.json (maybe on another node) is gone with the old job
            io.write_status(run_dir, state="queued", pid=None, slurm_job=job, slurm_restarts=restarts)
            args = ["train", "--resume", str(run_dir)]
        else:  # first start, or requeued before its first epoch ended: claim the queued folder again
            io.write_status(run_dir, state="queued", pid=None, slurm_job=job, slurm_restarts=restarts)
            args = ["train", "--config", str(run_dir / "config.yaml"), "--run-id", run_dir.name, "--runs-dir",
                    str(run_dir.parent)]
        # the trainer is a child, as for a local run; it ignores SLURM's early-warning signal (submitit, in this
        # process, requeues the job on it) and stops on SIGTERM (scancel, a requeue) at its next batch
        code = subprocess.run([sys.executable, "-m", "fer_core", *args], check=False, env=env,
                              preexec_fn=_ignore_early_warning).returncode
        if io.read_status(run_dir).get("state") == "cancelled" and job and restart_count(job) > restarts:
            # SIGTERM came from a requeue (scontrol requeue, a preemption), not from scancel: the run is not
            # cancelled, it waits in the queue and resumes when the job starts again
            io.write_status(run_dir, state="queued", pid=None, error=None, requeued=time.time())
            return 0
        if code and io.read_status(run_dir).get("state") == "cancelled":  # scancel: the run says so itself
            return 0
        if code:
            raise SlurmError(f"python -m fer_core {' '.join(args)} exited {code}; see {run_dir / 'log.txt'}")
        return code

    def checkpoint(self) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(TrainJob(self.run_dir))
