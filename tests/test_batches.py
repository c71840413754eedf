"""Where the images live while training (fer_core.batches): the choice by size, identical batches from every
placement, the same run streamed and held in memory, and torch.compile keeping plain checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fer_core import io
from fer_core.batches import StreamedImages, choose_placement, index_batches, iter_batches
from fer_core.config import load_config
from fer_core.data import build_dataset, materialize
from fer_core.train import train

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml"
GB = 10**9


def test_auto_placement_by_size_and_forced_settings():
    cuda = torch.device("cuda")
    assert choose_placement(GB, cuda, host_free=64 * GB, device_free=10 * GB).placement == "device"
    too_big = choose_placement(5 * GB, cuda, host_free=64 * GB, device_free=10 * GB)
    assert too_big.placement == "host" and "exceed 40% of the 10.00 GB free" in too_big.reason
    streamed = choose_placement(40 * GB, cuda, host_free=64 * GB, device_free=80 * GB)
    assert streamed.placement == "stream" and "50% of the 64.00 GB of host memory" in streamed.reason
    assert choose_placement(GB, "cpu", host_free=64 * GB).placement == "host"
    assert choose_placement(40 * GB, "cpu", host_free=64 * GB).placement == "stream"
    assert choose_placement(GB, "cpu", "device").placement == "host"  # on a CPU run the host is the device
    assert choose_placement(GB, cuda, "device").placement == "device"
    assert choose_placement(10, "cpu", "stream").placement == "stream"
    with pytest.raises(ValueError, match="unknown data placement 'gpu'"):
        choose_placement(10, "cpu", "gpu")


def test_every_placement_yields_the_same_batches():
    ds = build_dataset("synthfaces", split="val", image_size=24, val_size=37)
    held, _ = materialize(ds)
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(3))
    batches = [order[s:s + 8] for s in range(0, len(order), 8)]
    expected = [held[b] for b in batches]
    for workers in (0, 2):
        streamed = StreamedImages(ds, workers)
        assert len(streamed) == 37 and streamed.shape == held.shape and streamed.nbytes == held.numel()
        got = list(iter_batches(streamed, batches, "cpu"))
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(iter_batches(held, batches, "cpu"), expected, strict=True))
    assert [len(b) for b in index_batches(37, 16)] == [16, 16, 5]


def _run(tmp_path: Path, name: str, *overrides: str) -> tuple[dict, dict]:
    cfg = load_config(SMOKE, ("train.epochs=2", "data.options.train_size=64", *overrides))
    run_dir = tmp_path / name
    assert train(cfg, run_dir)["state"] == "done"
    return io.read_metrics(run_dir)[-1], load_file(run_dir / "checkpoints" / "last.safetensors")


def test_streamed_run_equals_the_run_held_in_memory(tmp_path):
    held_metrics, held_weights = _run(tmp_path, "held", "train.data_placement=host")
    stream_metrics, stream_weights = _run(tmp_path, "stream", "train.data_placement=stream", "train.num_workers=2")
    assert stream_metrics["val_acc"] == held_metrics["val_acc"]
    assert stream_metrics["train_loss"] == pytest.approx(held_metrics["train_loss"], rel=1e-6)
    assert held_weights.keys() == stream_weights.keys()
    assert all(torch.allclose(held_weights[k], stream_weights[k], atol=1e-6) for k in held_weights)
    log = (tmp_path / "stream" / "log.txt").read_text()
    assert "synthfaces train: 64 images held nowhere, streamed by 2 worker(s): train.data_placement=stream" in log
    auto = load_config(SMOKE, ("train.epochs=1",))
    train(auto, tmp_path / "auto")
    assert "synthfaces train: 96 images held in host memory: " in (tmp_path / "auto" / "log.txt").read_text()


def test_compiled_run_trains_and_saves_plain_weights(tmp_path):
    metrics, weights = _run(tmp_path, "compiled", "train.compile=true", "train.epochs=1")
    assert metrics["epoch"] == 1 and metrics["train_loss"] == metrics["train_loss"]  # finite, not NaN
    assert not any(k.startswith("_orig_mod") for k in weights)  # loads into an uncompiled model
    assert "torch.compile" in (tmp_path / "compiled" / "log.txt").read_text()
