"""The training benchmark (bench/bench_train.py) runs end to end at its smallest settings, so it cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--quick", "--threads", "1", "--models", "small_cnn", "--batch-size", "8", "--workers", "1",
        "--target-seconds", "0", "--train-faces", "32", "--test-faces", "16", "--scaling-batches", "8",
        "--scaling-sizes", "16", "--job-faces", "16,8,8", "--job-models", "small_cnn", "--eval-models", "small_cnn"]


def _run(tmp_path: Path, device: str) -> str:
    out = tmp_path / "train.md"
    cmd = [sys.executable, str(ROOT / "bench" / "bench_train.py"), "--device", device, *TINY, "--out", str(out),
           "--workdir", str(tmp_path / "work")]
    # the SynthFACS cache: conftest's private folder for this test session, inherited through the environment
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    for heading in ("## 1. Training throughput", "## 2. A RAF-DB-sized job", "## 3. Evaluation and memory",
                    "## 4. How the FER Lab path scales", "## 5. Profile", "## Goals", "## What limits"):
        assert heading in text
    assert "| small_cnn | 3x64x64 |" in text  # a throughput row with both paths measured
    assert "CPU shared:" in text and "Quick mode" in text
    assert f"python bench/bench_train.py --device {device} --quick" in text  # the command that reproduces it
    assert text in proc.stdout  # the report is printed too
    return text


@pytest.mark.slow
def test_bench_train_runs_end_to_end_on_cpu(tmp_path: Path):
    text = _run(tmp_path, "cpu")
    assert "precision fp32" in text


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bench_train_runs_end_to_end_on_cuda(tmp_path: Path):
    text = _run(tmp_path, "cuda")
    assert "precision bf16 autocast" in text and "Top 10 by self CUDA time" in text
