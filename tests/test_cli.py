"""``python -m fer_core``: exit codes, the runs table, evaluate, and background runs (launch, cancel, resume)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fer_core import io
from fer_core.cli import main
from fer_core.lifecycle import cancel_run, launch_resume, launch_train
from fer_core.models import list_models

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs" / "smoke.yaml"


def test_config_error_exits_2_without_traceback_or_run_folder(runs_root):
    proc = subprocess.run([sys.executable, "-m", "fer_core", "train", "--config", str(SMOKE), "--set",
                           "train.optimizer.lr=-0.1", "--set", "data.nmae=x"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "train.optimizer.lr: must be > 0 (got -0.1)" in proc.stderr
    assert ("unknown key 'data.nmae' (valid: name, root, options, label_noise, label_noise_mode, shuffle_labels)"
            in proc.stderr)
    assert "Traceback" not in proc.stderr
    assert list(runs_root.iterdir()) == []


def test_usage_errors_exit_2(runs_root, capsys):
    assert main(["train"]) == 2
    assert "needs --config" in capsys.readouterr().err
    assert main(["train", "--config", str(SMOKE), "--run-id", "../escape"]) == 2
    assert "--run-id: invalid run id '../escape'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["nonsense"])
    assert info.value.code == 2


def test_runs_table_and_evaluate(smoke_run, runs_root, capsys):
    shutil.copytree(smoke_run[0], runs_root / "smoke-a")
    (runs_root / "not-a-run").mkdir()
    assert main(["runs"]) == 0
    out, err = capsys.readouterr()
    header, _, row = out.splitlines()[:3]
    assert header.split()[:7] == ["run_id", "state", "model", "data", "epoch", "val_acc", "test_acc"]
    assert "occlusion" in header and "pose30" in header
    assert row.split()[:5] == ["smoke-a", "done", "small_cnn", "synthfaces", "2/2"]
    assert "skipped" in err and "not-a-run" in err
    assert main(["evaluate", "smoke-a", "--subset", "all"]) == 0
    assert "test/all" in capsys.readouterr().out
    assert main(["evaluate", "no-such-run"]) == 1


def test_models_command(capsys):
    assert main(["models", "--no-latency", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(list_models())
    assert rows["small_cnn"]["target_layer"] == "blocks.3" and rows["resnet18"]["params"] == 11_180_103
    assert rows["resnet18"]["flops"] == 2 * rows["resnet18"]["macs"] and rows["resnet18"]["latency_ms"] is None


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
def test_launch_cancel_and_resume_in_the_background(runs_root):
    run_id, pid = launch_train(SMOKE, ["train.epochs=200"], root=runs_root)
    run_dir = runs_root / run_id
    status = io.read_status(run_dir)
    assert status["state"] in ("queued", "running") and status["pid"] == pid  # at once, for the app to follow
    _wait(lambda: len(io.read_metrics(run_dir)) >= 1, 120, "the first epoch")
    assert io.run_state(run_dir) == "running"
    assert cancel_run(run_dir) == "cancelled"
    assert not io.pid_alive(pid)
    done = len(io.read_metrics(run_dir))
    assert done >= 1 and (run_dir / "checkpoints" / "last_state.pt").exists()
    assert "cancelled" in (run_dir / "log.txt").read_text()

    pid2 = launch_resume(run_dir, [f"train.epochs={done + 1}"])
    _wait(lambda: io.run_state(run_dir) not in ("queued", "running"), 120, "the resumed run to finish")
    assert io.run_state(run_dir) == "done", (run_dir / "stdout.txt").read_text()[-2000:]
    assert [m["epoch"] for m in io.read_metrics(run_dir)] == list(range(1, done + 2))
    assert pid2 != pid and "test/all" in io.read_eval(run_dir)
    assert "epoch" in (run_dir / "stdout.txt").read_text()


def test_data_sheet_command(tmp_path, capsys):
    import fer_core.data.sheet  # noqa: F401  (a broken import fails here, never skips)
    out = tmp_path / "sheet.png"
    assert main(["data", "sheet", "synthfaces", "--out", str(out), "--set", "image_size=32", "--set", "per_row=1",
                 "--set", "test_size=200"]) == 0
    assert out.stat().st_size > 0 and out.read_bytes()[:4] == b"\x89PNG"
    assert main(["data", "sheet", "nope", "--out", str(out)]) == 1
    assert "only 'synthfaces'" in capsys.readouterr().err


def _train_argv(root: Path) -> list[str]:
    return [sys.executable, "-m", "fer_core", "train", "--config", str(SMOKE), "--runs-dir", str(root),
            "--set", "train.epochs=1", "--set", "eval.subsets=[all]"]


@pytest.mark.slow
def test_train_draws_a_progress_bar_on_a_terminal_and_plain_lines_otherwise(tmp_path):
    import fcntl
    import os
    import struct
    import termios

    master, slave = os.openpty()  # a real pseudo-terminal, 100 columns wide, as a user's shell gives
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen(_train_argv(tmp_path / "tty"), stdin=slave, stdout=slave, stderr=slave, cwd=ROOT)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=300) == 0
    os.close(master)
    screen = b"".join(chunks).decode(errors="replace")
    assert "epoch 1/1:" in screen and "img/s" in screen and "\r" in screen  # tqdm's bar: images, rate, redrawn
    assert "epoch 1/1 loss" in screen  # and the epoch's line after it

    piped = subprocess.run(_train_argv(tmp_path / "pipe"), capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert piped.returncode == 0, piped.stderr
    assert "epoch 1/1 loss" in piped.stdout and "test/all: accuracy" in piped.stdout
    assert "img/s" not in piped.stdout + piped.stderr and "\r" not in piped.stdout  # a log gets lines only


def test_output_into_a_closed_pipe_ends_quietly(runs_root):
    """``python -m fer_core models --json | head -0``: no BrokenPipeError traceback, the exit code of SIGPIPE."""
    proc = subprocess.Popen([sys.executable, "-m", "fer_core", "models", "--no-latency", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err
