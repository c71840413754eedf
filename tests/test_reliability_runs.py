"""No run is lost: atomic run files, SIGKILL at any moment, runs started at the same moment, full disks and
unwritable runs folders (docs/RELIABILITY.md lists what each test injects).

Training runs here are ``configs/smoke.yaml`` made smaller (seconds each, CPU). They run in *forked* children that
call the real entry point (``fer_core.cli.main(["train", ...])``): the child shares the already imported torch, so
each run costs its training time only, and it can be SIGKILLed like any trainer process. Faults are injected inside
the child (the parent is never patched): a SIGKILL on the N-th durable file operation (``os.fsync`` or
``os.replace``, the two steps of every atomic write and of each metrics line), a SIGKILL after a random delay, or
ENOSPC / EROFS from ``os.fsync``. The kill points come from seeded ``random.Random`` draws, so every run of the
suite tries the same points. tests/test_train.py's SIGKILL test (SCN + SAM, through a fresh interpreter) is
complementary: this one covers a two-stage schedule, file-operation kill points and the app's view of killed runs.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import random
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fer_core import io
from fer_core.cli import main
from fer_core.config import load_config
from fer_core.models.weights import read_state_dict
from fer_core.runs import load_trainer_state, resumable

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs" / "smoke.yaml"
FORK = multiprocessing.get_context("fork")
# Two stages (frozen backbone, then all layers with another optimiser): the kill points cover a stage boundary.
TWO_STAGES = ["--set", "train.stages=[{name: head, epochs: 1, freeze: backbone}, "
              "{name: all, epochs: 2, optimizer: {name: sgd, lr: 0.01, momentum: 0.9}}]",
              "--set", "eval.subsets=[all]", "--set", "data.options.train_size=64"]
COMPARED = ("train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "lr")

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir() or not hasattr(os, "fork"),
                                reason="needs Linux (fork, /proc) to inject faults into a trainer process")


# --------------------------------------------------------------------------------------------- child processes
def _child(argv: list[str], fault: dict | None, out: str | None) -> None:
    """Body of a forked trainer: install ``fault``, run the CLI, exit with its code (SIGKILL never returns)."""
    torch.set_num_threads(1)
    ops = {"n": 0}
    real_fsync, real_replace = os.fsync, os.replace
    fault = fault or {}
    runs = str(Path(argv[argv.index("--runs-dir") + 1]).resolve()) + os.sep

    def durable(real: Callable, path: str, *args):
        # only operations on the run's own files count (not the shared data cache's, written by whichever run
        # renders the data first), so the same index means the same moment in every run
        if path.startswith(runs):
            if ops["n"] == fault.get("kill_at_op"):
                os.kill(os.getpid(), signal.SIGKILL)
            ops["n"] += 1
        return real(*args)

    def fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        # fail_errno: every write under the folder fail_under fails, once the file armed_by exists
        if fault.get("fail_errno") and os.path.exists(fault["armed_by"]) \
                and path.startswith(fault["fail_under"] + os.sep):
            raise OSError(fault["fail_errno"], os.strerror(fault["fail_errno"]))
        return durable(real_fsync, path, fd)

    os.fsync = fsync
    os.replace = lambda src, dst: durable(real_replace, os.path.abspath(dst), src, dst)
    if "same_first_id" in fault:  # every child draws this id first: a clash as if started in the same second
        import secrets

        real_token, first = secrets.token_hex, [True]

        def token(n: int) -> str:
            if first[0]:
                first[0] = False
                return fault["same_first_id"]
            return real_token(n)

        secrets.token_hex = token
        time.strftime = lambda fmt, *a: "20260101-000000"
    if "start" in fault:
        fault["start"].wait(30)
    code = main(argv)
    if out:
        Path(out).write_text(json.dumps({"code": code, "ops": ops["n"]}))
    os._exit(code)


def spawn(argv: list[str], fault: dict | None = None, out: Path | None = None):
    proc = FORK.Process(target=_child, args=(argv, fault, str(out) if out else None), daemon=True)
    proc.start()
    return proc


def run(argv: list[str], fault: dict | None = None, out: Path | None = None, timeout: float = 120) -> int:
    proc = spawn(argv, fault, out)
    proc.join(timeout)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
        pytest.fail(f"trainer {argv} did not finish in {timeout} s")
    return proc.exitcode


def train_argv(root: Path, run_id: str, *extra: str) -> list[str]:
    return ["train", "--quiet", "--config", str(SMOKE), "--runs-dir", str(root), "--run-id", run_id, *TWO_STAGES,
            *extra]


def resume_argv(root: Path, run_id: str) -> list[str]:
    return ["train", "--quiet", "--resume", run_id, "--runs-dir", str(root)]


# --------------------------------------------------------------------------------------------- checks
def assert_readable(run_dir: Path) -> dict:
    """What the app needs of a run folder: listed without a problem, every file parseable, checkpoints loadable."""
    rows = {r["run_id"]: r for r in io.list_runs(run_dir.parent)}
    row = rows[run_dir.name]
    assert row["problem"] is None, row["problem"]
    io.read_config(run_dir)
    io.read_status(run_dir)
    io.read_metrics(run_dir)
    io.read_eval(run_dir)
    ckpt = run_dir / "checkpoints"
    for weights in ckpt.glob("*.safetensors") if ckpt.is_dir() else []:
        assert read_state_dict(weights)
    if resumable(run_dir):
        state = load_trainer_state(ckpt)
        assert {"model", "epoch", "stage", "rng"} <= set(state)
    return row


def assert_same_run(expected: Path, got: Path) -> None:
    a, b = io.read_metrics(expected), io.read_metrics(got)
    assert [m["epoch"] for m in b] == [m["epoch"] for m in a] == [1, 2, 3]
    for x, y in zip(a, b, strict=True):
        for key in COMPARED:
            assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-7), (got.name, x["epoch"], key)
    assert io.read_eval(got)["test/all"]["accuracy"] == io.read_eval(expected)["test/all"]["accuracy"]
    assert io.run_state(got) == "done"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, int, float]:
    """A run of the two-stage smoke config that was never interrupted: (run folder, durable file operations, s)."""
    root = tmp_path_factory.mktemp("reference_runs")
    out = root.parent / "reference.json"
    t0 = time.monotonic()
    assert run(train_argv(root, "straight"), out=out) == 0
    seconds = time.monotonic() - t0
    ops = json.loads(out.read_text())["ops"]
    assert ops > 20
    return root / "straight", ops, seconds


# --------------------------------------------------------------------------------------------- SIGKILL
# Fixed kill points besides the random ones: the very first file operation (the run folder is still being built
# under a hidden name), the last one before it is published, one in the final evaluation, the very last one (the
# final "done" status being renamed into place).
FIXED_POINTS = {"first": lambda ops: 0, "before_publish": lambda ops: 3, "evaluation": lambda ops: ops - 4,
                "last": lambda ops: ops - 1}


@pytest.mark.parametrize("seed", [*range(6), *FIXED_POINTS])
def test_sigkill_at_a_random_moment_leaves_a_readable_interrupted_resumable_run(seed, reference, tmp_path):
    """Even seeds kill on a random durable file operation (between writing a temporary file and renaming it, or
    before a metrics line is synced), odd seeds after a random delay, named points at the edges; then the run is
    read as the app reads it, resumed, and must end with exactly the reference run's metrics."""
    straight, ops, seconds = reference
    rng = random.Random(9000 + seed if isinstance(seed, int) else 0)
    root, run_id = tmp_path / "runs", f"killed-{seed}"
    run_dir = root / run_id
    if seed in FIXED_POINTS or seed % 2 == 0:
        op = FIXED_POINTS[seed](ops) if seed in FIXED_POINTS else rng.randrange(ops)
        code = run(train_argv(root, run_id), {"kill_at_op": op})
        where = f"file operation {op} of {ops}"
    else:
        delay = rng.uniform(0.05, 0.9) * seconds
        proc = spawn(train_argv(root, run_id))
        time.sleep(delay)
        proc.kill()
        proc.join(30)
        code = proc.exitcode
        where = f"{delay:.2f} s of {seconds:.2f} s"
    if code == 0:  # the delay outlasted the run: nothing to recover
        assert isinstance(seed, int) and seed % 2 == 1, f"a kill at {where} did not happen"
        assert_same_run(straight, run_dir)
        return
    assert code == -signal.SIGKILL, (where, code)
    if not run_dir.exists():  # killed before the folder was published (built under a hidden name): no run started
        assert all(p.name.startswith(f".{run_id}.") for p in (root.iterdir() if root.exists() else ())), where
        assert io.list_runs(root) == [] and not io.list_runs(root).skipped
        assert run(train_argv(root, run_id)) == 0
    elif io.run_state(run_dir) == "done":  # killed between writing its final status and exiting: nothing lost
        assert_readable(run_dir)
    else:
        row = assert_readable(run_dir)
        assert row["state"] == "interrupted", (where, io.read_status(run_dir))
        assert run(resume_argv(root, run_id)) == 0, (where, (run_dir / "log.txt").read_text()[-2000:])
    assert_same_run(straight, run_dir)


def test_app_shows_a_killed_run_as_interrupted_and_offers_resume(reference, tmp_path, monkeypatch):
    from apphelpers import app

    straight, ops, _ = reference
    root = tmp_path / "runs"
    # the first checkpoint of the second stage: after it, the run has weights, metrics and a resumable state
    assert run(train_argv(root, "cut"), {"kill_at_op": ops * 2 // 3}) == -signal.SIGKILL
    monkeypatch.setenv("FER_RUNS_DIR", str(root))
    pid = io.read_status(root / "cut")["pid"]
    at = app("../pages/run.py", run="cut")
    assert any("orange-badge[interrupted]" in m.value for m in at.markdown)
    assert any("interrupted" in w.value and str(pid) in w.value for w in at.warning)
    assert [b.label for b in at.button] == ["Resume from the last checkpoint"]


# --------------------------------------------------------------------------------------------- same moment
def test_two_runs_started_at_the_same_moment_get_distinct_folders(tmp_path):
    """Two trainers released together, both drawing the same first run id (same second, same random suffix):
    one takes it, the other draws again; both train to the end in folders of their own."""
    root = tmp_path / "runs"
    start = FORK.Event()
    argv = ["train", "--quiet", "--config", str(SMOKE), "--runs-dir", str(root), "--set", "train.epochs=1",
            "--set", "eval.subsets=[all]", "--set", "data.options.train_size=64"]
    procs = [spawn(argv, {"same_first_id": "abcd", "start": start}) for _ in range(2)]
    time.sleep(0.2)
    start.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    runs = sorted(p.name for p in root.iterdir())
    assert len(runs) == 2 and "20260101-000000-smoke-abcd" in runs, runs
    pids = {io.read_status(root / r)["pid"] for r in runs}
    assert pids == {p.pid for p in procs}
    for r in runs:
        assert io.run_state(root / r) == "done" and len(io.read_metrics(root / r)) == 1


def test_the_same_run_id_at_the_same_moment_trains_once(tmp_path):
    """Two trainers given the same --run-id at once: exactly one trains; the other stops with 'already exists'
    before touching the folder (it must not take the other's freshly created, still queued run for its own)."""
    root = tmp_path / "runs"
    start = FORK.Event()
    argv = ["train", "--quiet", "--config", str(SMOKE), "--runs-dir", str(root), "--run-id", "twin",
            "--set", "train.epochs=1", "--set", "eval.subsets=[all]", "--set", "data.options.train_size=64"]
    procs = [spawn(argv, {"start": start}) for _ in range(2)]
    time.sleep(0.2)
    start.set()
    for p in procs:
        p.join(120)
    codes = sorted(p.exitcode for p in procs)
    assert codes[0] == 0 and codes[1] in (1, 2), codes
    winner = next(p for p in procs if p.exitcode == 0)
    status = io.read_status(root / "twin")
    assert status["pid"] == winner.pid and status["state"] == "done"
    assert [m["epoch"] for m in io.read_metrics(root / "twin")] == [1]
    assert [p.name for p in root.iterdir()] == ["twin"]


def test_run_folders_created_by_many_threads_at_once_never_collide(tmp_path, monkeypatch):
    """``io.create_new_run_dir`` from 16 threads at the same instant, all forced onto the same first id."""
    import secrets

    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20260101-000000")
    seen: set[str] = set()
    lock = threading.Lock()

    def token(n: int) -> str:  # the first draw of each thread is 'abcd'
        with lock:
            name = threading.current_thread().name
            if name not in seen:
                seen.add(name)
                return "abcd"
        return os.urandom(n).hex()

    monkeypatch.setattr(secrets, "token_hex", token)
    barrier = threading.Barrier(16)
    made: list[Path] = []

    def create(i: int) -> None:
        barrier.wait()
        made.append(io.create_new_run_dir("same", tmp_path, config="name: same\n", state="queued", owner=i))

    threads = [threading.Thread(target=create, args=(i,), name=f"t{i}") for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == len({p.name for p in made}) == 16
    owners = sorted(io.read_status(p)["owner"] for p in made)
    assert owners == list(range(16))  # every folder holds exactly its creator's files
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in made)  # no temporary left


# --------------------------------------------------------------------------------------------- atomic writes
def test_every_run_file_is_written_atomically_or_appended(tmp_path):
    """An audit of every file a real run (SCN: its scn/ files too) opens for writing: each is a temporary file
    renamed over its target, or one of the append-only files (metrics.jsonl, log.txt, the status lock, the
    TensorBoard event file)."""
    from fsaudit import recording

    from fer_core.train import train

    run_dir = (tmp_path / "run").resolve()
    cfg = load_config(SMOKE, ["model.name=scn", "train.method={name: scn, relabel_epoch: 0}",
                              "eval.subsets=[all, occlusion]"])
    with recording() as rec:
        assert train(cfg, run_dir)["state"] == "done"
    renamed = {Path(src).resolve(): Path(dst).resolve() for src, dst in rec.renames}
    appended = {run_dir / "metrics.jsonl", run_dir / "log.txt", run_dir / ".status.lock"}
    direct = []
    for path in rec.written_paths():
        if run_dir not in path.parents:
            continue
        temp = re.fullmatch(r"\.(.+)\.[^.]+\.tmp", path.name)
        if temp and renamed.get(path) == path.parent / temp.group(1):
            continue
        if path not in appended and not (path.parent == run_dir / "tensorboard" and
                                         path.name.startswith("events.out.tfevents.")):
            direct.append(path)  # (TensorBoard's event file is an append-only log of CRC-checked records)
    assert not direct, f"written in place, not atomically: {direct}"
    final = {dst for dst in renamed.values() if run_dir in dst.parents}
    names = {str(p.relative_to(run_dir)) for p in final}
    assert {"config.yaml", "status.json", "checkpoints/last_state.pt", "checkpoints/best.safetensors",
            "eval/test_all.json", "eval/test_all_predictions.csv", "scn/epoch_000.csv"} <= names, names
    assert not list(run_dir.rglob("*.tmp"))


# --------------------------------------------------------------------------------------------- full disk
def test_disk_full_while_checkpointing_fails_clearly_and_keeps_the_last_good_checkpoint(reference, tmp_path):
    """ENOSPC from every checkpoint write once the first epoch's checkpoint exists: the run fails naming the
    file, the epoch-1 checkpoint is untouched and loads, no temporary file is left, and with space back the run
    resumes to exactly the reference metrics."""
    straight, _, _ = reference
    root = tmp_path / "runs"
    run_dir = root / "full"
    fault = {"fail_errno": errno.ENOSPC, "armed_by": str(run_dir / "checkpoints" / "last_state.pt"),
             "fail_under": str(run_dir / "checkpoints")}
    assert run(train_argv(root, "full"), fault) == 1
    status = io.read_status(run_dir)
    assert status["state"] == "failed" and "No space left on device" in status["error"], status
    assert re.search(r"could not write \S+(safetensors|_state\.pt)", status["error"]), status["error"]
    assert io.run_state(run_dir) == "failed"
    assert load_trainer_state(run_dir / "checkpoints")["epoch"] == 1
    assert not list(run_dir.rglob("*.tmp"))
    assert_readable(run_dir)
    assert run(resume_argv(root, "full")) == 0
    assert_same_run(straight, run_dir)


def test_runs_folder_turning_read_only_mid_run_leaves_it_interrupted_and_resumable(reference, tmp_path):
    """EROFS from every write into the run folder (status.json too) once the first checkpoint exists: the
    trainer cannot even record its failure, so its folder keeps the last good files, reads as interrupted when
    the process is gone, and resumes to the reference metrics once writable again."""
    straight, _, _ = reference
    root = tmp_path / "runs"
    run_dir = root / "ro"
    fault = {"fail_errno": errno.EROFS, "armed_by": str(run_dir / "checkpoints" / "last_state.pt"),
             "fail_under": str(run_dir)}
    assert run(train_argv(root, "ro"), fault) == 1
    assert io.run_state(run_dir) == "interrupted", io.read_status(run_dir)
    assert "Read-only file system" in (run_dir / "log.txt").read_text()
    assert_readable(run_dir)
    assert resumable(run_dir) and load_trainer_state(run_dir / "checkpoints")["epoch"] == 1
    assert [m["epoch"] for m in io.read_metrics(run_dir)] == [1]
    assert not list(run_dir.rglob("*.tmp"))
    assert run(resume_argv(root, "ro")) == 0
    assert_same_run(straight, run_dir)


def _writes_blocked(folder: Path) -> bool:
    try:
        (folder / ".probe").write_text("x")
    except PermissionError:
        return True
    (folder / ".probe").unlink()
    return False


def test_read_only_runs_folder_is_a_clear_error_and_creates_nothing(tmp_path, capsys):
    root = tmp_path / "runs"
    root.mkdir()
    root.chmod(0o555)
    try:
        if not _writes_blocked(root):
            pytest.skip("this process may write into a mode-0555 folder (it runs as root or with "
                        "CAP_DAC_OVERRIDE), so chmod cannot make the runs folder read-only here; "
                        "test_unwritable_runs_folder_simulated covers the same failure by injecting the errors")
        assert main(["train", "--quiet", "--config", str(SMOKE), "--runs-dir", str(root)]) == 1
        err = capsys.readouterr().err
        assert f"cannot create a run in {root}" in err and "Permission denied" in err and "Traceback" not in err
        assert list(root.iterdir()) == []
    finally:
        root.chmod(0o755)


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.ENOSPC])
def test_unwritable_runs_folder_simulated(code, tmp_path, monkeypatch, capsys):
    """The runs folder refuses new entries (permission, read-only file system, full disk), injected where a run
    folder is made: the CLI exits 1 naming the folder and the cause, without a traceback, and the app's launcher
    raises the same error for the page to show; nothing is created."""
    import tempfile

    from fer_core.lifecycle import launch_train

    root = tmp_path / "runs"
    root.mkdir()
    real_mkdtemp, real_mkdir = tempfile.mkdtemp, Path.mkdir

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    def mkdir(self, *args, **kwargs):
        if self.parent == root:
            refuse()
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: refuse() if k.get("dir") == root else
                        real_mkdtemp(*a, **k))
    monkeypatch.setattr(Path, "mkdir", mkdir)
    assert main(["train", "--quiet", "--config", str(SMOKE), "--runs-dir", str(root)]) == 1
    err = capsys.readouterr().err
    assert f"cannot create a run in {root}: {os.strerror(code)}" in err and "FER_RUNS_DIR" in err, err
    assert "Traceback" not in err
    with pytest.raises(OSError, match=f"cannot create a run in {re.escape(str(root))}") as info:
        launch_train(SMOKE, root=root)
    assert info.value.errno == code
    assert list(root.iterdir()) == []
