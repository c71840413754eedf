"""SynthFACS generation speed: images per second per core, and against decoding the same images as JPEGs.

The reference is what a real-data pipeline does per image in every epoch: open a RAF-DB-style aligned JPEG
from disk and decode it with PIL (as the SCN and RAN reference code do). Both are measured in this run, on
the same machine, at the same image size, so the ratio is what carries over to other machines.

    python bench/bench_synthfaces.py [--n 600] [--size 112] [--out bench/results/synthfaces.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_core.data.cache import _render_range, render_split  # noqa: E402
from fer_core.data.synthfaces import VERSION, SynthConfig, sample_meta  # noqa: E402


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600, help="images per measurement")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--out", default="bench/results/synthfaces.md")
    args = ap.parse_args()
    n, size = args.n, args.size
    opts = {"image_size": size}
    cfg = SynthConfig(**opts)

    meta_s = best_of(lambda: [sample_meta(cfg, "train", i) for i in range(n)])
    render_s = best_of(lambda: _render_range((opts, "train", 0, n)))
    cores = os.cpu_count() or 1
    parallel_s = best_of(lambda: render_split(opts, "train", n * cores, workers=cores), repeats=2)

    from PIL import Image

    images, _, _ = _render_range((opts, "train", 0, n))
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, img in enumerate(images):
            p = Path(tmp) / f"train_{i:05d}_aligned.jpg"
            Image.fromarray(img).save(p, quality=95)
            paths.append(p)

        def decode():
            for p in paths:
                with Image.open(p) as im:
                    np.asarray(im.convert("RGB"))

        decode_s = best_of(decode)

    rows = [
        ("sample parameters only (no pixels), 1 core", n / meta_s),
        ("render image + relevance mask, 1 core", n / render_s),
        (f"render image + relevance mask, {cores} processes (per core)", n * cores / parallel_s / cores),
        (f"render image + relevance mask, {cores} processes (total)", n * cores / parallel_s),
        ("reference: PIL open + decode of the same images as JPEG, 1 core", n / decode_s),
    ]
    full_split = cfg.train_size / (n * cores / parallel_s)
    lines = [
        f"# SynthFACS {VERSION} generation speed ({size}x{size} RGB)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {cores} cores, Python {platform.python_version()}. "
        f"Command: `python bench/bench_synthfaces.py --n {n} --size {size}` (best of 3).",
        "",
        "| what | images/s |",
        "|---|---:|",
        *[f"| {name} | {rate:,.0f} |" for name, rate in rows],
        "",
        f"Rendering costs {rows[4][1] / rows[1][1]:.1f}x a JPEG decode per image on one core; the default train split "
        f"({cfg.train_size:,} faces) renders in {full_split:.0f} s on {cores} cores and is then cached on disk "
        "(`fer_core.data.materialize`), so later epochs and runs read uint8 arrays.",
    ]
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
