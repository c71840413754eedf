"""The SLURM backend against a real single-node SLURM cluster started for these tests (scripts/slurm_cluster.sh:
Debian's slurm-wlm and munge, installed as root when missing): a run submitted and done with the metrics of a
local run, a wrong partition refused with no run folder left, scancel, a requeue mid-training that ends with the
metrics of an uninterrupted run, and a job that vanished without its run recording an end marked failed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from apphelpers import wait_for

from fer_core import io, lifecycle, slurm
from fer_core.config import load_config
from fer_core.train import train

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs" / "smoke.yaml"
CLUSTER = ROOT / "scripts" / "slurm_cluster.sh"

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running single-node cluster (partitions debug and short); stopped after this module's tests."""
    env = {**os.environ, "SLURM_TEST_DIR": str(tmp_path_factory.mktemp("slurm-state"))}
    out = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, f"the test cluster did not start:\n{out.stdout}\n{out.stderr}"
    yield
    subprocess.run(["bash", str(CLUSTER), "stop"], capture_output=True, text=True, timeout=60, env=env)


def _final(run_dir: Path, timeout: float = 240.0) -> str:
    return wait_for(lambda: (s := io.read_status(run_dir).get("state")) not in ("queued", "running", None) and s,
                 timeout, f"run {run_dir.name} to end")


def _same_metrics(a: Path, b: Path) -> None:
    ma, mb = io.read_metrics(a), io.read_metrics(b)
    assert [m["epoch"] for m in ma] == [m["epoch"] for m in mb]
    for x, y in zip(ma, mb, strict=True):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            assert x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-6), (x["epoch"], key)
    assert io.read_eval(a)["test/all"]["accuracy"] == pytest.approx(io.read_eval(b)["test/all"]["accuracy"])


def test_time_and_options_parse_as_slurm_writes_them(tmp_path, monkeypatch):
    assert [slurm.parse_time(t) for t in ("90", "1:30", "2:00:00", "1-12", "1-00:30:00")] == [90, 2, 120, 2160,
                                                                                                  1470]
    assert slurm.parse_options(["partition=gpu,gpus=1", "time=2:00:00"]) == \
        {"partition": "gpu", "gpus": "1", "time": "2:00:00"}
    with pytest.raises(ValueError, match="key=value"):
        slurm.parse_options(["partition"])
    defaults = tmp_path / "slurm.yaml"
    defaults.write_text("partition: short\ntime: 0:30:00\nmem: 4G\n")
    monkeypatch.setenv(slurm.DEFAULTS_ENV, str(defaults))
    options = slurm.resolve_options({"time": "1:00:00"})
    assert (options.partition, options.time, options.mem) == ("short", 60, "4G")
    with pytest.raises(ValueError, match=f"defaults from {defaults}.*gpus"):
        slurm.resolve_options({"gpus": "-1"})


def test_a_run_submitted_from_the_command_line_trains_as_a_local_run_does(cluster, tmp_path):
    out = subprocess.run([sys.executable, "-m", "fer_core", "train", "--config", str(SMOKE), "--backend", "slurm",
                          "--slurm", "partition=debug,time=10", "--run-id", "on-slurm", "--runs-dir",
                          str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    run_dir = tmp_path / "runs" / "on-slurm"
    job = io.read_status(run_dir)["slurm_job"]
    assert f"submitted as SLURM job {job}" in out.stdout
    assert _final(run_dir) == "done", (run_dir / "log.txt").read_text()[-2000:]
    assert (run_dir / "slurm" / f"{job}_submission.sh").read_text().count("#SBATCH --partition=debug") == 1
    train(load_config(SMOKE), tmp_path / "local")
    _same_metrics(run_dir, tmp_path / "local")
    listed = subprocess.run([sys.executable, "-m", "fer_core", "runs", "--runs-dir", str(tmp_path / "runs")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "on-slurm" in listed.stdout and "done" in listed.stdout


def test_a_wrong_partition_is_refused_with_no_run_folder_left(cluster, tmp_path):
    with pytest.raises(slurm.SlurmError, match=r"(?i)invalid partition.*Partitions here: debug, short"):
        lifecycle.submit_train(SMOKE, run_id="nowhere", root=tmp_path, slurm={"partition": "nosuch"})
    assert list(tmp_path.iterdir()) == []


def test_cancel_is_scancel_and_the_run_ends_cancelled(cluster, tmp_path):
    run_id, job = lifecycle.submit_train(SMOKE, ["train.epochs=300"], run_id="to-cancel", root=tmp_path)
    run_dir = tmp_path / run_id
    wait_for(lambda: io.read_metrics(run_dir), what="the first epoch")
    assert lifecycle.cancel_run(run_dir, wait=60) == "cancelled"
    assert 1 <= io.read_status(run_dir)["epoch"] < 300
    wait_for(lambda: slurm.job_states([job])[job] not in slurm.ACTIVE_JOB_STATES, 60, "the job to end")


def test_a_requeued_job_resumes_and_ends_as_an_uninterrupted_run(cluster, tmp_path):
    overrides = ["train.epochs=6"]
    run_id, job = lifecycle.submit_train(SMOKE, overrides, run_id="requeued", root=tmp_path)
    run_dir = tmp_path / run_id
    wait_for(lambda: len(io.read_metrics(run_dir)) >= 2, what="two epochs")
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)
    # SLURM holds a requeued job back for a while (BeginTime); a cluster would start it when it can
    wait_for(lambda: slurm.job_states([job])[job] == "PENDING", 60, "the job back in the queue")
    assert io.read_status(run_dir)["state"] == "queued"  # waiting to resume, not cancelled
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, timeout=30)
    wait_for(lambda: slurm.job_states([job])[job] not in slurm.ACTIVE_JOB_STATES, 240, "the requeued job to end")
    assert io.read_status(run_dir)["state"] == "done", (run_dir / "log.txt").read_text()[-2000:]
    status = io.read_status(run_dir)
    assert status["slurm_restarts"] == 1 and status["slurm_job"] == job
    assert "resumed after epoch" in (run_dir / "log.txt").read_text()
    train(load_config(SMOKE, overrides), tmp_path / "uninterrupted")
    _same_metrics(run_dir, tmp_path / "uninterrupted")


def test_a_job_that_vanished_without_the_run_writing_its_end_marks_the_run_failed(cluster, tmp_path):
    run_id, job = lifecycle.submit_train(SMOKE, ["train.epochs=300"], run_id="killed", root=tmp_path)
    run_dir = tmp_path / run_id
    wait_for(lambda: io.read_metrics(run_dir), what="the first epoch")
    # a node lost: the trainer and the job die at once, nothing can write
    os.kill(io.read_status(run_dir)["pid"], signal.SIGKILL)
    subprocess.run(["scancel", "--signal=KILL", "--full", job], check=True, timeout=30)
    wait_for(lambda: slurm.job_states([job])[job] not in slurm.ACTIVE_JOB_STATES, 60, "the job to end")
    assert io.read_status(run_dir)["state"] == "running"  # what the folder says: it was never told
    [row] = slurm.refresh(list(io.list_runs(tmp_path)), max_age=0)
    assert row["state"] == "failed" and row["queue"] not in slurm.ACTIVE_JOB_STATES
    error = io.read_status(run_dir)["error"]
    assert f"SLURM job {job} ended" in error and "without the trainer writing the run's end" in error


def test_a_queued_run_whose_job_failed_before_starting_says_so(tmp_path):
    run_dir = lifecycle.create_run(load_config(SMOKE), "never-started", tmp_path, backend="slurm")
    io.write_status(run_dir, slurm_job="424242")
    assert slurm.reconcile(run_dir, state="NODE_FAIL") == "failed"
    status = io.read_status(run_dir)
    assert status["error"] == "SLURM job 424242 ended NODE_FAIL before the trainer wrote anything"
    assert slurm.reconcile(run_dir, state="RUNNING") == "failed"  # an end is never taken back


def test_two_tasks_train_one_run_with_ddp_as_one_process_on_the_whole_batch(cluster, tmp_path):
    """srun's two tasks are two DistributedDataParallel processes (rank and size from SLURM's environment, as
    torchrun's path takes them); without batch statistics, augmentation or dropout (BatchNorm frozen) their steps
    are one process's on the whole batch."""
    overrides = ["train.augment={hflip: false, crop_padding: 0}", "model.options={drop_rate: 0.0}",
                 "train.stages=[{name: frozen_bn, epochs: 2, freeze_bn: true}]", "eval.subsets=[all]"]
    run_id, job = lifecycle.submit_train(SMOKE, overrides, run_id="ddp", root=tmp_path,
                                         slurm={"tasks": 2, "cpus": 1})
    run_dir = tmp_path / run_id
    wait_for(lambda: slurm.job_states([job])[job] not in slurm.ACTIVE_JOB_STATES, 300, "the job to end")
    log = (run_dir / "log.txt").read_text()
    assert io.read_status(run_dir)["state"] == "done", log[-2000:]
    assert "distributed: 2 processes (gloo), global batch 32 = 16 per process" in log
    assert log.count("starting run ddp") == 1  # rank 0 alone writes the run
    train(load_config(SMOKE, overrides), tmp_path / "one")
    _same_metrics(run_dir, tmp_path / "one")


def test_a_sweep_is_one_job_array_with_a_limit_on_the_runs_at_once(cluster, tmp_path):
    out = subprocess.run([sys.executable, "-m", "fer_core", "sweep", "--config", str(SMOKE), "--grid", "seed=0,1,2",
                          "--set", "train.epochs=1", "--set", "eval.subsets=[all]", "--group", "seeds",
                          "--parallel", "2", "--backend", "slurm", "--runs-dir", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    runs = list(io.list_runs(tmp_path, group="seeds"))
    jobs = [r["slurm_job"] for r in runs]
    assert len(runs) == 3 and len({j.split("_")[0] for j in jobs}) == 1, jobs  # one array, a task per run
    [script] = (tmp_path / ".sweeps" / "seeds" / "slurm").glob("*_submission.sh")
    assert "#SBATCH --array=0-2%2" in script.read_text()
    for r in runs:
        assert _final(Path(r["path"])) == "done", (Path(r["path"]) / "log.txt").read_text()[-1500:]
    assert sorted(io.read_config(r["path"])["seed"] for r in runs) == [0, 1, 2]


def test_a_refused_sweep_leaves_none_of_its_run_folders(cluster, tmp_path):
    with pytest.raises(slurm.SlurmError, match="(?i)invalid partition"):
        lifecycle.submit_sweep(load_config(SMOKE), {"seed": [0, 1]}, runs_root=tmp_path, group="nowhere",
                               slurm={"partition": "nosuch"})
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]


def test_the_train_page_submits_to_a_partition_from_sinfo_and_shows_the_job(cluster, runs_root):
    from apphelpers import app, ok

    at = app("../pages/train.py")
    at.selectbox(key="train.recipe").select("smoke.yaml").run()
    at.number_input(key="train.form.train.epochs").set_value(1)
    ok(at.run())
    at.segmented_control(key="train.backend").set_value("SLURM")
    ok(at.run())
    partition = at.selectbox(key="train.slurm.partition")
    assert partition.options == ["debug", "short"]
    partition.select("short")
    at.text_input(key="train.slurm.time").input("0:20:00")
    ok(at.run())
    at.button(key="train.launch").click()
    ok(at.run())
    assert not at.error, [e.value for e in at.error]
    run_dir = runs_root / at.query_params["run"]
    job = io.read_status(run_dir)["slurm_job"]
    script = (run_dir / "slurm" / f"{job}_submission.sh").read_text()
    assert "#SBATCH --partition=short" in script and "#SBATCH --time=20" in script
    assert _final(run_dir) == "done"
    at.run()
    assert not at.error and any("Finished 1 epochs" in s.value for s in at.success)


def test_a_search_runs_its_trials_as_slurm_jobs_and_prunes_one_with_scancel(cluster, tmp_path):
    from test_search import SPACE, PruneTrial

    from fer_core.search import load_space, run_search, search_summary

    # 20 epochs: the pruned trial's job must not finish before scancel reaches it
    started = run_search(load_config(SMOKE, ["train.epochs=20", "eval.subsets=[all]"]), load_space(SPACE), 3,
                         group="on-slurm", runs_root=tmp_path, parallel=3, pruner=PruneTrial(1),
                         backend="slurm", slurm={"time": "10"}, poll_interval=0.3)
    assert len(started) == 3
    runs = {r["run_id"]: r for r in io.list_runs(tmp_path, group="on-slurm")}
    assert all(r["slurm_job"] for r in runs.values())
    states = [t["state"] for t in search_summary("on-slurm", tmp_path)["trials"]]
    assert states == ["complete", "pruned", "complete"]
    pruned = next(r for r in runs.values() if r["tags"]["trial"] == 1)
    assert pruned["state"] == "cancelled" and pruned["pruned"] >= 2  # (the poll may see two epochs at once)
