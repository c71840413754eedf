"""Explanation latency on one face, per method and model, against the app's goals; fast Score-CAM and LIME checks.

Goals (issue 5): the Grad-CAM family under 100 ms per face; a full panel of every method under 3 s. Measured on
this machine's CPU with the current torch thread count, one face at a time, median of ``--repeats`` calls after
a warm-up call (library imports and caches excluded). Also measured in the same run:

* Score-CAM over the top-k channels (``scorecam_fast``) against full Score-CAM: speed-up and the Pearson
  correlation of the two maps;
* LIME's stability: the correlation of the maps of two seeds, at the default sample count.

    python bench/bench_explain.py [--repeats 3] [--out bench/results/explain.md]

Models: the pretrained mini-Xception (64x64 grey), the small CNN (64x64) and ResNet-18 (224x224; random weights,
as ImageNet weights cannot be downloaded here: latency does not depend on them). The face: scikit-image's
astronaut, cropped.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import median_seconds, write_report  # noqa: E402  (bench/report.py: timing, the results file)

from fer_core.explain import explain, list_methods  # noqa: E402
from fer_core.models import create_model  # noqa: E402

MODELS = {"mini_xception_fer2013": {}, "small_cnn": {"pretrained": False}, "resnet18": {"pretrained": False}}
CAM_FAMILY = ("gradcam", "gradcam++", "layercam", "eigencam")
# What the app can show at once without sampling the model hundreds of times: gradients, the CAM family, the
# top-k Score-CAM and activations. SmoothGrad, Integrated Gradients, occlusion, LIME and full Score-CAM run the
# model tens to thousands of times per face and are measured separately.
LIVE_PANEL = ("saliency", *CAM_FAMILY, "scorecam_fast", "activations")
REFERENCE = "forward + backward (reference)"


def face() -> np.ndarray:
    from skimage.data import astronaut

    return np.ascontiguousarray(astronaut()[50:180, 160:290])


def timed(model, image, method, repeats: int, **options) -> tuple[float, np.ndarray]:
    last = {}

    def once() -> None:
        last["map"] = explain(model, image, method, **options).map

    return median_seconds(once, repeats, warmup=1), last["map"]


def forward_backward(model, image, repeats: int) -> float:
    """One forward and backward pass of the model on the face, preprocessed as ``explain`` does: the floor under
    any gradient method's latency, measured in the same run."""
    from fer_core.explain.core import prepare

    def once() -> None:
        x = prepare(model, image)[2].detach().requires_grad_(True)
        model.zero_grad(set_to_none=True)
        model(x).max().backward()

    seconds = median_seconds(once, repeats, warmup=1)
    model.zero_grad(set_to_none=True)
    return seconds


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench/results/explain.md"))
    args = ap.parse_args()
    image = face()
    methods = list_methods()
    rows, checks = {}, []
    for name, kwargs in MODELS.items():
        torch.manual_seed(0)
        model = create_model(name, num_classes=7, **kwargs).eval()
        maps = {}
        rows.setdefault(REFERENCE, {})[name] = forward_backward(model, image, args.repeats)
        for method in methods:
            seconds, maps[method] = timed(model, image, method, args.repeats)
            rows.setdefault(method, {})[name] = seconds
        full, fast = rows["scorecam"][name], rows["scorecam_fast"][name]
        lime_b = explain(model, image, "lime", seed=1).map
        checks.append((name, full / fast, corr(maps["scorecam"], maps["scorecam_fast"]), corr(maps["lime"], lime_b)))
    names = list(MODELS)
    lines = ["# Explanation latency (one face, CPU)\n",
             f"`python bench/bench_explain.py --repeats {args.repeats}` on "
             f"{platform.processor() or platform.machine()}, "
             f"{torch.get_num_threads()} torch threads, torch {torch.__version__}. Median of {args.repeats} calls "
             "after a warm-up call; milliseconds.\n",
             "| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for method in (REFERENCE, *methods):
        lines.append(f"| {method} | " + " | ".join(f"{1000 * rows[method][n]:.0f}" for n in names) + " |")
    panel = {n: sum(rows[m][n] for m in methods) for n in names}
    live = {n: sum(rows[m][n] for m in LIVE_PANEL) for n in names}
    lines.append("| **all methods (a full panel)** | " + " | ".join(f"**{1000 * panel[n]:.0f}**" for n in names)
                 + " |")
    lines.append("| **live panel: " + ", ".join(LIVE_PANEL) + "** | "
                 + " | ".join(f"**{1000 * live[n]:.0f}**" for n in names) + " |")
    cam = {n: max(rows[m][n] for m in CAM_FAMILY) for n in names}
    lines += ["", "Goals: Grad-CAM family under 100 ms: " + ", ".join(
        f"{n} {'met' if cam[n] < 0.1 else 'missed'} (slowest {1000 * cam[n]:.0f} ms)" for n in names) + ".",
        "Full panel under 3 s: " + ", ".join(f"{n} {'met' if panel[n] < 3 else 'missed'} ({panel[n]:.1f} s)"
                                              for n in names) + ".",
        "Live panel under 3 s: " + ", ".join(f"{n} {'met' if live[n] < 3 else 'missed'} ({live[n]:.1f} s)"
                                              for n in names) + ".",
        "Grad-CAM / one forward + backward pass: " + ", ".join(
            f"{n} {rows['gradcam'][n] / rows[REFERENCE][n]:.2f}x" for n in names) + ".", "",
        "| model | Score-CAM top-32 speed-up | map correlation with full Score-CAM "
        "| LIME map correlation, seeds 0 vs 1 |",
        "|---|---|---|---|"]
    lines += [f"| {n} | {s:.1f}x | {c:.3f} | {lc:.3f} |" for n, s, c, lc in checks]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
