"""CPU latency per face of an exported ONNX file in onnxruntime against the same model in PyTorch eager mode.

For each model, the same float pixel batch (the model's input size and channels, normalisation inside the graph)
goes through (a) the PyTorch model behind :class:`fer_core.export.NormalisedLogits` under ``torch.inference_mode``
and (b) the exported file (:func:`fer_core.export.export_model`) in an onnxruntime CPU session with the same thread
count. Batch 1 and batch 32; median of ``--repeats`` calls after warm-up calls; milliseconds per face and the ratio
eager / onnxruntime (above 1: onnxruntime is faster). Also in the same run: :meth:`Predictor.probabilities` on 32
face crops of another size (resizing included) for ``Predictor.from_model`` and ``Predictor.from_onnx``.

    python bench/bench_export.py [--repeats 30] [--threads N] [--out bench/results/export.md]

Models: the pretrained mini-Xception (64x64 grey) and the small CNN (64x64 RGB; random weights: latency does not
depend on them).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import median_seconds, write_report  # noqa: E402  (bench/report.py: the results file)

from fer_core.export import NormalisedLogits, export_model  # noqa: E402
from fer_core.models import create_model  # noqa: E402
from fer_core.predict import Predictor  # noqa: E402

MODELS = {"mini_xception_fer2013": {}, "small_cnn": {"pretrained": False}}
BATCHES = (1, 32)


def run_eager(model: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.inference_mode():
        model(x)


def main() -> None:
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads (default torch's)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/export.md"))
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, kwargs in MODELS.items():
            torch.manual_seed(0)
            model = create_model(name, num_classes=7, **kwargs).eval()
            path = export_model(model, Path(tmp) / f"{name}.onnx")
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            eager = NormalisedLogits(model).eval()
            for batch in BATCHES:
                x = (rng.random((batch, *model.cfg.input_size)) * 255).astype(np.float32)
                t_eager = median_seconds(partial(run_eager, eager, torch.from_numpy(x)), args.repeats) / batch
                t_ort = median_seconds(partial(session.run, None, {"pixels": x}), args.repeats) / batch
                rows.append((name, f"graph, batch {batch}", t_eager, t_ort))
            crops = [rng.integers(0, 256, (96, 80, 3), dtype=np.uint8) for _ in range(32)]
            torch_p = Predictor(model)
            onnx_p = Predictor.from_onnx(path, threads=threads)
            t_eager = median_seconds(partial(torch_p.probabilities, crops), max(3, args.repeats // 3)) / 32
            t_ort = median_seconds(partial(onnx_p.probabilities, crops), max(3, args.repeats // 3)) / 32
            rows.append((name, "Predictor.probabilities, 32 crops 96x80 RGB", t_eager, t_ort))
    lines = ["# Exported ONNX (onnxruntime) against PyTorch eager: CPU latency per face\n",
             f"`python bench/bench_export.py --repeats {args.repeats}"
             f"{f' --threads {args.threads}' if args.threads else ''}` on "
             f"{platform.processor() or platform.machine()}, {threads} thread(s) for both, torch {torch.__version__}, "
             f"onnxruntime {ort.__version__}. Median of {args.repeats} calls after 3 warm-up calls "
             f"({max(3, args.repeats // 3)} for the Predictor rows); milliseconds per face. Load average (1 min) "
             f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after on {os.cpu_count()} cores; the ratio compares "
             "two measurements of the same run.\n",
             "| model | what | PyTorch eager ms/face | onnxruntime ms/face | eager / onnxruntime |",
             "|---|---|---|---|---|"]
    lines += [f"| {n} | {what} | {1000 * te:.3f} | {1000 * to:.3f} | {te / to:.2f}x |" for n, what, te, to in rows]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
