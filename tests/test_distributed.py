"""Data-parallel training on the CPU with the gloo backend and two processes (as ``torchrun`` would start them)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from fer_core import io
from fer_core.config import load_config
from fer_core.distributed import World
from fer_core.methods import StandardTraining, TrainData
from fer_core.models import ModelConfig
from fer_core.train import Precision, TrainNet, train_one_epoch
from fer_core.transforms import BatchTransform

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toy_setup():
    """A BatchNorm-free linear model (so one process with the whole batch and two with half each must agree)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    model.cfg = ModelConfig(name="toy", input_size=(3, 8, 8), mean=(0.5,) * 3, std=(0.5,) * 3, num_classes=4)
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, 4, (64,))
    data = TrainData(images=images, labels=labels, clean_labels=labels,
                     class_names=["neutral", "happy", "sad", "surprise"])
    return model, data


def _epoch(model, data, world: World) -> dict:
    cfg = load_config(None)
    method = StandardTraining(cfg, data, Path("."), torch.device("cpu"), write_files=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    tf = BatchTransform(model.cfg)
    net = TrainNet(model, world, torch.device("cpu"))
    fp32 = Precision("fp32", torch.device("cpu"))
    return train_one_epoch(model, method, opt, data.images, tf, batch_size=16, epoch=0,
                           generator=torch.Generator().manual_seed(3), precision=fp32, world=world, net=net)


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    model, data = _toy_setup()
    stats = _epoch(model, data, World(rank=rank, size=2))
    torch.save({"state": model.state_dict(), "stats": stats}, f"{out}.{rank}")
    torch.distributed.destroy_process_group()


def test_two_processes_take_the_same_steps_as_one_with_the_whole_batch(tmp_path):
    model, data = _toy_setup()
    single = _epoch(model, data, World())
    out = str(tmp_path / "ddp")
    mp.spawn(_worker, args=(_free_port(), out), nprocs=2, join=True)
    ranks = [torch.load(f"{out}.{r}", weights_only=True) for r in (0, 1)]
    for key, value in model.state_dict().items():
        assert torch.equal(ranks[0]["state"][key], ranks[1]["state"][key]), "the ranks' weights diverged"
        assert torch.allclose(ranks[0]["state"][key], value, atol=1e-5), key  # gradients were averaged
    for k in ("train_loss", "train_acc"):  # metrics are over all ranks' samples
        assert ranks[0]["stats"][k] == pytest.approx(single[k], rel=1e-5)
        assert ranks[1]["stats"][k] == pytest.approx(single[k], rel=1e-5)


def test_torchrun_trains_one_run_written_by_rank_zero_only(tmp_path):
    runs = tmp_path / "runs"
    env = {**os.environ, "FER_RUNS_DIR": str(runs), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "fer_core", "train", "--quiet", "--config", str(SMOKE), "--run-id", "ddp",
           "--set", "model.name=scn", "--set", "model.input_size=32", "--set", "eval.subsets=[all]",
           "--set", "train.method={name: scn, relabel_epoch: 0}", "--set", "data.label_noise=0.2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = runs / "ddp"
    assert io.run_state(run) == "done" and proc.stdout.count("run ddp:") == 1
    log = (run / "log.txt").read_text()
    assert "distributed: 2 processes (gloo), global batch 32 = 16 per process" in log
    assert log.count("starting run ddp") == 1  # one log, one set of files
    assert [m["epoch"] for m in io.read_metrics(run)] == [1, 2]
    assert (run / "scn" / "epoch_001.csv").exists() and io.read_eval(run)["test/all"]["n"] == 96
