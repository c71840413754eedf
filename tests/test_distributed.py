"""Data-parallel training on the CPU with the gloo backend and two processes (as ``torchrun`` would start them)."""

from __future__ import annotations

import csv
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
from fer_core.distributed import SINGLE_PROCESS, World
from fer_core.methods import SCNTraining, StandardTraining, TrainData
from fer_core.models import AttentionOutput, ModelConfig
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


class _ToySCN(nn.Module):
    """SCN's shape without BatchNorm: shared features, logits scaled by a sigmoid importance weight per sample."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU())
        self.fc, self.alpha = nn.Linear(16, 4), nn.Linear(16, 1)
        self.cfg = ModelConfig(name="toy_scn", input_size=(3, 8, 8), mean=(0.5,) * 3, std=(0.5,) * 3, num_classes=4)

    def forward_attention(self, x: torch.Tensor) -> AttentionOutput:
        f = self.features(x)
        weights, part = torch.sigmoid(self.alpha(f)), self.fc(f)
        return AttentionOutput(part * weights, weights, part.unsqueeze(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_attention(x).logits


SCN_EPOCHS, SCN_BATCH = 3, 16


def _scn_setup(run_dir: Path, world: World):
    """The toy SCN, 64 images with a quarter of their labels flipped, and SCN relabelling from epoch 0 with margin
    0 (so every low-importance sample whose argmax is not its label is relabelled: no near-ties decide anything)."""
    torch.manual_seed(0)
    model = _ToySCN()
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    clean = torch.randint(0, 4, (64,))
    labels = torch.where(torch.arange(64) % 4 == 0, (clean + 1) % 4, clean)
    data = TrainData(images=images, labels=labels, clean_labels=clean,
                     class_names=["neutral", "happy", "sad", "surprise"])
    cfg = load_config(None, ["model.name=scn", "train.method={name: scn, relabel_epoch: 0, margin_2: 0.0}"])
    method = SCNTraining(cfg, data, run_dir, torch.device("cpu"), write_files=world.main)
    return model, data, method, torch.optim.SGD(model.parameters(), lr=0.5)


def _scn_worker(rank: int, port: int, run_dir: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    world = World(rank=rank, size=2)
    model, data, method, opt = _scn_setup(Path(run_dir), world)
    net, fp32 = TrainNet(model, world, torch.device("cpu")), Precision("fp32", torch.device("cpu"))
    rows = []
    for epoch in range(SCN_EPOCHS):  # as the trainer does: an epoch, synchronize, end_epoch
        train_one_epoch(model, method, opt, data.images, BatchTransform(model.cfg), batch_size=SCN_BATCH,
                        epoch=epoch, generator=torch.Generator().manual_seed(100 + epoch), precision=fp32,
                        world=world, net=net)
        method.synchronize(world)
        rows.append(method.end_epoch(epoch))
    torch.save({"state": model.state_dict(), "rows": rows, "labels": method.labels}, f"{out}.{rank}")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _scn_one_process(run_dir: Path):
    """The reference: one process takes each global batch as the two ranks' halves (the same ``shard``), each half
    grouped and relabelled on its own as its rank does, and one step on the mean of the halves' losses (what
    DistributedDataParallel's averaged gradients amount to)."""
    model, data, method, opt = _scn_setup(run_dir, SINGLE_PROCESS)
    tf = BatchTransform(model.cfg)
    model.train()
    rows = []
    for epoch in range(SCN_EPOCHS):
        order = torch.randperm(len(data.images), generator=torch.Generator().manual_seed(100 + epoch))
        for start in range(0, len(order), SCN_BATCH):
            opt.zero_grad(set_to_none=True)
            for rank in (0, 1):
                idx = order[start:start + SCN_BATCH][rank::2]
                (method.step(model, tf(data.images[idx]), idx, epoch).loss / 2).backward()
            opt.step()
        method.synchronize(SINGLE_PROCESS)
        rows.append(method.end_epoch(epoch))
    return model, rows, method.labels


def _csv_rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_two_processes_merge_scn_weights_groups_and_relabels_as_one_process(tmp_path):
    """Under data parallelism each rank weighs, groups and relabels only its own half of every batch; what rank 0
    writes (scn/epoch_NNN.csv, scn/relabels_NNN.csv), the scn_* metrics and every rank's label table must be the
    one process's over the same halves, epoch after epoch (the groups and labels of epoch 1 on depend on the merge
    of the epoch before)."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    model, expected_rows, expected_labels = _scn_one_process(tmp_path / "one")
    out = str(tmp_path / "ddp")
    mp.spawn(_scn_worker, args=(_free_port(), str(tmp_path / "two"), out), nprocs=2, join=True)
    ranks = [torch.load(f"{out}.{r}", weights_only=True) for r in (0, 1)]
    for rank in ranks:
        for key, value in model.state_dict().items():
            assert torch.allclose(rank["state"][key], value, atol=1e-5), key
        assert rank["labels"].tolist() == expected_labels.tolist(), "the merged label tables"
        for epoch, (want, got) in enumerate(zip(expected_rows, rank["rows"], strict=True)):
            assert got == pytest.approx(want, abs=1e-5), epoch
    assert sum(r["scn_relabelled"] for r in expected_rows) > 0 and expected_rows[0]["scn_relabelled"] > 0
    assert sorted(p.name for p in (tmp_path / "two" / "scn").iterdir()) == \
        sorted(p.name for p in (tmp_path / "one" / "scn").iterdir())
    for epoch in range(SCN_EPOCHS):
        want = _csv_rows(tmp_path / "one" / "scn" / f"epoch_{epoch:03d}.csv")
        got = _csv_rows(tmp_path / "two" / "scn" / f"epoch_{epoch:03d}.csv")
        assert [(r["index"], r["group"], r["label"], r["clean_label"]) for r in got] == \
            [(r["index"], r["group"], r["label"], r["clean_label"]) for r in want], epoch
        assert [float(r["weight"]) for r in got] == pytest.approx([float(r["weight"]) for r in want], abs=2e-5)
        key = lambda r: int(r["index"])  # noqa: E731 - the ranks' events come rank by rank, not in batch order
        assert sorted(_csv_rows(tmp_path / "two" / "scn" / f"relabels_{epoch:03d}.csv"), key=key) == \
            sorted(_csv_rows(tmp_path / "one" / "scn" / f"relabels_{epoch:03d}.csv"), key=key), epoch


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


def test_torchrun_trains_a_stage_that_freezes_batchnorm(tmp_path):
    """DistributedDataParallel expects a gradient for every parameter that required one when it was built; a stage
    that freezes BatchNorm (PAtt-Lite's recipe) once crashed it in the first step. The wrapper is built per stage."""
    runs = tmp_path / "runs"
    env = {**os.environ, "FER_RUNS_DIR": str(runs), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "fer_core", "train", "--quiet", "--config", str(SMOKE), "--run-id", "frozen",
           "--set", "eval.subsets=[all]", "--set",
           "train.stages=[{name: warm, epochs: 1}, {name: frozen_bn, epochs: 1, freeze_bn: true}]"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert io.run_state(runs / "frozen") == "done"
    assert [m["stage"] for m in io.read_metrics(runs / "frozen")] == ["warm", "frozen_bn"]
