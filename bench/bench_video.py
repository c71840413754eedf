"""Frames per second of video prediction (decode, detect, track, classify, smooth) against decoding alone.

A SynthFACS clip at 640 x 480 and 25 fps (``fer_core.data.synthfaces.clip.write_clip``: one face, and two faces)
is written once, in MPEG-4 Part 2 (mp4v, what OpenCV writes); then, in the same run and the same process:

* decoding alone: :func:`fer_core.video.iter_frames` over every frame (OpenCV/FFmpeg decode + BGR->RGB);
* :func:`fer_core.video.predict_video` with the pretrained mini-Xception in PyTorch eager mode, default options
  (Haar detection on every frame at 320 px, tracking, classification, smoothing), the same with
  ``detect_every=3``, and with the model exported to ONNX and run by onnxruntime;
* the overlay video with Grad-CAM (:func:`fer_core.video.write_overlay`, VP9 WebM), once (explanations are on
  demand per frame in the app; this row says what a whole clip costs).

Median of ``--repeats`` passes; frames per second and the time per frame relative to decoding alone.

    python bench/bench_video.py [--repeats 3] [--seconds 8] [--out bench/results/video.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import median_seconds, write_report  # noqa: E402  (bench/report.py: the results file)

from fer_core.data.synthfaces.clip import write_clip  # noqa: E402
from fer_core.export import export_registered  # noqa: E402
from fer_core.predict import Predictor  # noqa: E402
from fer_core.video import iter_frames, predict_video, write_overlay  # noqa: E402

GOAL_FPS = 25.0


def decode_all(path: Path) -> int:
    return sum(1 for _ in iter_frames(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0, help="clip length (25 fps)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/video.md"))
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    threads = torch.get_num_threads()
    eager = Predictor.from_model("mini_xception_fer2013")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        onnx = Predictor.from_onnx(export_registered("mini_xception_fer2013", "onnx", out=Path(tmp) / "mx.onnx"),
                                   threads=threads)
        for faces in (1, 2):
            clip = write_clip(Path(tmp) / f"clip{faces}.mp4", faces=faces, seconds=args.seconds, fps=25,
                              width=640, height=480, seed=0)
            n = decode_all(clip.path)  # also warms the file cache
            predict_video(eager, clip.path, max_frames=10)  # warm-up: cascades loaded, first forward passes
            t_decode = median_seconds(lambda p=clip.path: decode_all(p), args.repeats, warmup=0)
            what = f"{faces} face{'s' if faces > 1 else ''}, {n} frames 640x480"
            rows.append((what, "decoding alone (OpenCV)", t_decode, t_decode, n))
            for label, predictor, options in (
                    ("predict_video, mini-Xception eager, defaults (detect every frame at 320 px)", eager, {}),
                    ("predict_video, mini-Xception eager, detect_every=3", eager, {"detect_every": 3}),
                    ("predict_video, mini-Xception ONNX (onnxruntime), defaults", onnx, {})):
                seconds = median_seconds(lambda p=predictor, o=options, c=clip.path: predict_video(p, c, **o),
                                         args.repeats, warmup=0)
                rows.append((what, label, seconds, t_decode, n))
            if faces == 1:
                df = predict_video(eager, clip.path)
                start = time.perf_counter()
                write_overlay(clip.path, df, Path(tmp) / "overlay.webm", predictor=eager, method="gradcam")
                rows.append((what, "overlay video with Grad-CAM (VP9 WebM), once", time.perf_counter() - start,
                             t_decode, n))
    main_row = next(r for r in rows if r[0].startswith("1 face") and "eager, defaults" in r[1])
    fps = main_row[4] / main_row[2]
    lines = ["# Video prediction: frames per second against decoding alone\n",
             f"`python bench/bench_video.py --repeats {args.repeats} --seconds {args.seconds:g}` on "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {threads} torch thread(s), "
             f"torch {torch.__version__}. SynthFACS clips at 25 fps, mp4v. Median of {args.repeats} passes. Load "
             f"average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after.\n",
             f"Goal: at least {GOAL_FPS:g} frames per second for mini-Xception with detection at 640x480: "
             f"**{fps:.1f} fps, {'met' if fps >= GOAL_FPS else 'NOT met'}**.\n",
             "| clip | what | seconds | frames per second | time per frame / decoding's |", "|---|---|---|---|---|"]
    lines += [f"| {clip} | {what} | {s:.2f} | {n / s:.1f} | {s / d:.1f}x |" for clip, what, s, d, n in rows]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
