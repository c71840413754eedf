"""What calibration and factor accuracies add to a run's evaluation, against the same evaluation without them.

A run's evaluation (``python -m fer_core evaluate RUN``, and the trainer's last step) predicts every test face
and every challenge subset and writes ``eval/``. Issue 18 added to it the calibration numbers of every split and
subset (ECE with equal-width and adaptive bins, NLL, Brier, the reliability bins, and all of them again after
temperature scaling: :mod:`fer_core.calibration`) and, on SynthFACS, the accuracy per bin of each factor
(:mod:`fer_core.factors`). The goal: together they add at most 20% to the evaluation's time.

In one process, on the same model, data and run folder, taking turns:

* reference: :func:`fer_core.evaluate.evaluate_model` with the two additions switched off (the calibration
  metrics return nothing, the factor file is not written): predictions, classification metrics, eval files;
* FER Lab: the same call as a run makes it, with its temperature (calibration before and after) and the factors.

The temperature fit (:func:`fer_core.evaluate.calibrate_model`: one pass over the validation split and a
one-dimensional search, once per run when training ends or on ``python -m fer_core calibrate``) is timed on its
own and reported beside the evaluation, not inside it. The model is the small CNN of the SynthFACS experiments
(``configs/experiments/base.yaml``: 64 px, 3,068 test faces) with random weights (the cost does not depend on
them); the split is rendered and cached before timing.

    python bench/bench_eval.py [--config configs/experiments/base.yaml] [--repeats 5] [--threads 2]
        [--out bench/results/eval.md]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_core import evaluate  # noqa: E402
from fer_core.config import load_config  # noqa: E402
from fer_core.io import dump_yaml  # noqa: E402
from fer_core.runs import load_split, model_from_config  # noqa: E402

GOAL = 1.20  # FER Lab's evaluation / the reference


@contextlib.contextmanager
def without_additions():
    """The evaluation as it was before issue 18: no calibration numbers, no factor file."""
    saved = evaluate.calibration_metrics, evaluate._write_factors
    evaluate.calibration_metrics = lambda *args, **kwargs: {}
    evaluate._write_factors = lambda *args, **kwargs: None
    try:
        yield
    finally:
        evaluate.calibration_metrics, evaluate._write_factors = saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/experiments/base.yaml")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="write the Markdown table here (default: print only)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()[0]

    cfg = load_config(args.config)
    ds, _, _ = load_split(cfg.data, "test")  # render and cache the split before timing
    load_split(cfg.data, "val")
    model = model_from_config(cfg, ds.classes).eval()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "bench-eval"
        (run_dir / "eval").mkdir(parents=True)
        (run_dir / "config.yaml").write_text(dump_yaml(cfg.model_dump(mode="json")))
        fit_times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            found = evaluate.calibrate_model(model, cfg, run_dir, weights="best")
            fit_times.append(time.perf_counter() - start)
        temperature = found["temperature"]

        def reference() -> None:
            with without_additions():
                evaluate.evaluate_model(model, cfg, run_dir, splits=["test"])

        def fer_lab() -> None:
            evaluate.evaluate_model(model, cfg, run_dir, splits=["test"], temperature=temperature)

        reference()  # warm-up (allocations, lazy imports)
        fer_lab()
        times: dict[str, list[float]] = {"reference": [], "fer_lab": []}
        for _ in range(args.repeats):
            for name, fn in (("reference", reference), ("fer_lab", fer_lab)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        results = evaluate.evaluate_model(model, cfg, run_dir, splits=["test"], temperature=temperature)
        n_faces = sum(r["n"] for r in results.values())
        factors = (run_dir / "eval" / "factors" / "test.json").exists()

    ref, ours = statistics.median(times["reference"]), statistics.median(times["fer_lab"])
    ratio = ours / ref
    lines = [
        "# Evaluation with calibration and factor accuracies (CPU)",
        "",
        f"`python bench/bench_eval.py --config {args.config} --repeats {args.repeats} --threads {args.threads}` on "
        f"{platform.machine()}, torch {torch.__version__}, {datetime.date.today().isoformat()}. "
        f"{cfg.model.name} (random weights) on SynthFACS test ({len(ds)} faces, {cfg.data.options.get('image_size')}"
        f" px), the split and {len(results)} subsets: {n_faces} predictions per evaluation. Median of "
        f"{args.repeats} calls each, taking turns, after a warm-up; seconds. Load average (1 min) {load_before:.1f} "
        f"before, {os.getloadavg()[0]:.1f} after on {os.cpu_count()} cores.",
        "",
        "| evaluation | median s | min s | / reference |",
        "|---|---|---|---|",
        f"| reference: predictions, classification metrics, eval files | {ref:.3f} | {min(times['reference']):.3f} "
        "| 1.00x |",
        f"| FER Lab: + calibration before/after temperature, + factor accuracies{' (written)' if factors else ''} | "
        f"{ours:.3f} | {min(times['fer_lab']):.3f} | {ratio:.2f}x |",
        "",
        f"Goal: at most {GOAL:.2f}x the reference: {'met' if ratio <= GOAL else 'missed'} ({ratio:.2f}x).",
        "",
        f"The temperature fit on the validation split ({found['n']} faces: one forward pass and the search), once "
        f"per run: median {statistics.median(fit_times):.3f} s ({statistics.median(fit_times) / ref:.2f}x the "
        "reference evaluation).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
