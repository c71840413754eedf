"""Run directories: atomic files, torn JSON lines, run ids, status and liveness, listing, checkpoints."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from fer_core import io
from fer_core.runs import load_trainer_state, load_weights, save_checkpoint


def test_runs_dir_env_and_default(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_RUNS_DIR", str(tmp_path / "elsewhere"))
    assert io.runs_dir() == (tmp_path / "elsewhere").resolve()
    monkeypatch.delenv("FER_RUNS_DIR")
    monkeypatch.chdir(tmp_path)
    assert io.runs_dir() == (tmp_path / "runs").resolve()
    assert io.runs_dir().is_absolute()


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "a.json"
    io.atomic_write_json(target, {"x": 1})
    io.atomic_write_json(target, {"x": 2})
    assert json.loads(target.read_text()) == {"x": 2}
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]


def test_atomic_write_failure_keeps_old_content(tmp_path, monkeypatch):
    target = tmp_path / "a.txt"
    io.atomic_write_text(target, "old")

    def boom(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk gone"):
        io.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_jsonl_torn_last_line_is_tolerated_and_repaired(tmp_path):
    path = tmp_path / "metrics.jsonl"
    io.append_jsonl(path, {"epoch": 1})
    io.append_jsonl(path, {"epoch": 2})
    with open(path, "a") as f:
        f.write('{"epoch": 3, "tra')  # killed mid-write
    assert io.read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]
    io.append_jsonl(path, {"epoch": 3})
    assert io.read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}]


def test_jsonl_bad_middle_line_names_file_and_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"a": 3}\n')
    with pytest.raises(ValueError, match=r"m\.jsonl, line 2"):
        io.read_jsonl(path)


def test_new_run_id_is_a_safe_folder_name():
    run_id = io.new_run_id("my run/../../etc passwd")
    assert re.fullmatch(r"\d{8}-\d{6}-[A-Za-z0-9._-]+-[0-9a-f]{4}", run_id), run_id
    assert "/" not in run_id and ".." not in run_id
    assert io.check_run_id(run_id) == run_id
    assert io.new_run_id("").split("-")[2] == "run"


@pytest.mark.parametrize("bad", ["../x", "a/b", "/etc", "..", ".", ".hidden", "", "a\\b", "x" * 300, "a..b"])
def test_run_path_refuses_escaping_ids(runs_root, bad):
    with pytest.raises(ValueError, match="invalid run id"):
        io.run_path(bad)


def test_run_path_and_create_run_dir(runs_root):
    assert io.run_path("20260101-000000-x-abcd") == runs_root / "20260101-000000-x-abcd"
    path = io.create_run_dir("r1")
    assert path.is_dir()
    with pytest.raises(FileExistsError, match="already exists"):
        io.create_run_dir("r1")
    assert io.resolve_run_dir("r1") == path
    io.write_status(path, state="queued")
    assert io.resolve_run_dir(str(path)) == path
    with pytest.raises(FileNotFoundError, match="no run"):
        io.resolve_run_dir("r2")


def test_status_merges_and_validates(tmp_path):
    s1 = io.write_status(tmp_path, state="queued", epochs=5)
    s2 = io.write_status(tmp_path, state="running", epoch=1)
    assert s2["epochs"] == 5 and s2["epoch"] == 1 and s2["created"] == s1["created"]
    assert io.read_status(tmp_path)["state"] == "running"
    assert s2["updated"] >= s1["updated"]
    with pytest.raises(ValueError, match="queued, running, done, failed, cancelled"):
        io.write_status(tmp_path, state="exploded")
    assert io.read_status(tmp_path / "nothing") == {}
    assert io.run_state(tmp_path / "nothing") == "unknown"


def test_run_state_detects_dead_and_zombie_process(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        io.write_status(tmp_path, state="running", pid=proc.pid)
        assert io.run_state(tmp_path) == "running"
        proc.kill()
        deadline = time.time() + 10
        while io.run_state(tmp_path) != "interrupted" and time.time() < deadline:  # zombie until reaped
            time.sleep(0.05)
        assert io.run_state(tmp_path) == "interrupted"
    finally:
        proc.kill()
        proc.wait()
    assert io.run_state(tmp_path) == "interrupted"
    io.write_status(tmp_path, state="done")
    assert io.run_state(tmp_path) == "done"


def test_run_state_detects_reused_pid(tmp_path):
    io.write_status(tmp_path, state="running", pid=os.getpid())
    assert io.run_state(tmp_path) == "running"
    if io.process_start_time(os.getpid()) is not None:  # Linux: a pid whose start time differs is another process
        io.write_status(tmp_path, pid_start=io.process_start_time(os.getpid()) + 1)
        assert io.run_state(tmp_path) == "interrupted"


def _fake_run(root: Path, run_id: str, created: float, test_acc: float) -> Path:
    run = io.create_run_dir(run_id, root)
    io.atomic_write_text(run / "config.yaml", "name: n\nmodel: {name: small_cnn}\ndata: {name: synthfaces}\n")
    io.write_status(run, state="done", epoch=2, epochs=2, created=created)
    io.append_jsonl(run / "metrics.jsonl", {"epoch": 1, "val_acc": 0.4})
    io.append_jsonl(run / "metrics.jsonl", {"epoch": 2, "val_acc": 0.6})
    for subset, acc in (("all", test_acc), ("occlusion", test_acc / 2)):
        io.atomic_write_json(io.eval_paths(run, "test", subset)[0],
                             {"split": "test", "subset": subset, "accuracy": acc, "class_names": ["a", "b"]})
    io.atomic_write_text(io.eval_paths(run, "test", "all")[1], "index,label,pred,correct,confidence,prob_a,prob_b\n"
                         "0,1,1,True,0.9,0.1,0.9\n")
    return run


def test_list_runs_newest_first_and_reports_non_runs(runs_root):
    _fake_run(runs_root, "old", 100.0, 0.5)
    new = _fake_run(runs_root, "new", 200.0, 0.8)
    (runs_root / "junk").mkdir()
    (runs_root / "notes.txt").write_text("x")
    runs = io.list_runs()
    assert [r["run_id"] for r in runs] == ["new", "old"]
    row = runs[0]
    assert row["state"] == "done" and row["model"] == "small_cnn" and row["dataset"] == "synthfaces"
    assert row["best_val_acc"] == 0.6 and row["test_acc"] == 0.8 and row["subset_acc"] == {"occlusion": 0.4}
    assert row["problem"] is None
    assert [Path(s["path"]).name for s in runs.skipped] == ["junk"]
    assert set(io.read_eval(new)) == {"test/all", "test/occlusion"}
    preds = io.read_predictions(new, "test", "all")
    assert list(preds.columns) == ["index", "label", "pred", "correct", "confidence", "prob_a", "prob_b"]
    (new / "status.json").write_text("{broken")
    row = next(r for r in io.list_runs() if r["run_id"] == "new")
    assert "status" in row["problem"] and row["state"] == "unknown"


def test_checkpoint_round_trip_and_strict_load(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "epoch": 3, "rng": torch.get_rng_state(), "best": 0.5}
    path = save_checkpoint(tmp_path, model, "last", state)
    assert path.name == "last.safetensors" and (tmp_path / "last_state.pt").exists()

    fresh = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    load_weights(fresh, path)
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    loaded = load_trainer_state(tmp_path, "last")
    assert loaded["epoch"] == 3 and torch.equal(loaded["rng"], state["rng"])
    opt2 = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(loaded["optimizer"])

    other = nn.Sequential(nn.Linear(3, 4), nn.Identity(), nn.Linear(4, 3), nn.Linear(3, 3))
    expected = (r"missing from the file \(2\): 3\.bias, 3\.weight; unexpected in the file \(5\): 1\.bias, "
                r"1\.num_batches_tracked.*shape mismatch \(2\): 2\.bias \(2,\) vs model \(3,\)")
    with pytest.raises(ValueError, match=expected):
        load_weights(other, path)
    with pytest.raises(FileNotFoundError, match="cannot be resumed"):
        load_trainer_state(tmp_path, "best")
