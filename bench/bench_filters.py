"""The Filters page's first load: gradient-ascent filter images, one batch per layer against one channel at a time.

The work is exactly the page's default (``pages/filters.py``), read from the page itself: AppTest opens the app,
switches to the Filters page with cold caches and the model picker's default model, and the bench takes the
layers (the model's stages), channels per layer, steps and image size from the page's session state. Measured in
the same run, in the same process:

* **page**: that first AppTest run of the page (model load, layer listing, every filter image; the activation
  tab has no face yet, so it costs nothing);
* **before** (the reference): the page's old loop with the old code, one gradient ascent per channel on the shared
  model, reproduced below as :func:`old_visualize_filter` (``fer_core/explain/features.py`` before batching);
* **one at a time**: the same loop with today's library, one ``visualize_filter(model, layer, channel)`` per
  channel (a batch of one on a channels-last copy of the model), so that batching alone can be told apart;
* **batched**: one ``visualize_filters(model, layer, channels)`` per layer, as the page calls it now;
* how far each batched image is from the old code's image of its channel (same seed; float32 rounding only, see
  ``fer_core.explain.visualize_filters``);
* the batched time at other step counts and sizes (``--no-grid`` leaves it out), to choose the page's defaults.

Timings are wall-clock seconds, after one warm-up call of each path; the two paths alternate, ``--repeats`` times
each, and the table gives the median and the best. The load average before and after is written beside them:
the ratio of the two paths is what carries over, a shared CPU changes the seconds.

    python bench/bench_filters.py [--repeats 3] [--threads N] [--no-grid] [--out bench/results/filters.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import write_report  # noqa: E402  (bench/report.py: the results file)

from fer_core.explain import stage_layers, visualize_filter, visualize_filters  # noqa: E402
from fer_core.explain.core import frozen_eval, model_device  # noqa: E402
from fer_core.explain.features import _COLOR, capture  # noqa: E402
from fer_core.models import create_model  # noqa: E402

FILTERS = "../pages/filters.py"
GRID_STEPS = (8, 16, 32, 64)
GRID_SIZES = (32, 48, 64)


def page_first_load() -> tuple[float, dict]:
    """Seconds of the Filters page's first run (cold caches) and its settings: model, layers, channels, steps,
    size."""
    os.environ["FER_RUNS_DIR"] = tempfile.mkdtemp(prefix="bench_filters_runs_")  # no runs: the default model
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app" / "Home.py"), default_timeout=600)
    at.run()
    at.switch_page(FILTERS)
    start = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - start
    if at.exception or at.error:
        raise RuntimeError(f"the Filters page failed: {[e.value for e in (*at.exception, *at.error)]}")
    state = at.session_state
    settings = dict(model=state["filters.model"].split(":", 1)[-1], layers=list(state["filters.layers"]),
                    channels=int(state["filters.channels"]), first=int(state["filters.first"]),
                    steps=int(state["filters.steps"]), size=int(state["filters.size"]))
    images = sum(len(el.value) for el in at.image if el.captions and el.captions[0].startswith("channel"))
    settings["images"] = images
    return seconds, settings


def old_visualize_filter(model, layer: str, channel: int, size: int, steps: int, lr: float = 0.05,
                         seed: int = 0) -> np.ndarray:
    """The old code: ``visualize_filter`` as it was before batching (one image, on the shared model under
    ``frozen_eval``, contiguous weights), kept here as the reference."""
    import math

    with torch.inference_mode(False), torch.enable_grad(), frozen_eval(model):
        c, h, w = model.cfg.input_size[0], size, size
        device = model_device(model)
        gen = torch.Generator().manual_seed(seed)
        freqs = torch.sqrt(torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.rfftfreq(w)[None, :] ** 2)
        scale = (1.0 / freqs.clamp_min(1.0 / max(h, w)))[None, :, :, None].to(device)
        spectrum = (torch.randn(c, h, w // 2 + 1, 2, generator=gen) * 0.01).to(device).requires_grad_(True)
        color = torch.from_numpy(_COLOR).to(device)
        mean = torch.tensor(model.cfg.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(model.cfg.std, device=device).view(1, -1, 1, 1)
        jitter = max(1, round(0.04 * max(h, w)))

        def render() -> torch.Tensor:
            img = torch.fft.irfft2(torch.view_as_complex(scale * spectrum), s=(h, w), norm="ortho") / 4.0
            if c == 3:
                img = torch.einsum("ij,jhw->ihw", color, img)
            return torch.sigmoid(img).unsqueeze(0)

        def robust(img: torch.Tensor) -> torch.Tensor:
            u = torch.rand(4, generator=gen)
            angle = math.radians((float(u[0]) * 2 - 1) * 10)
            s = 0.9 + 0.2 * float(u[1])
            tx, ty = ((u[2:] * 2 - 1) * jitter).round() * 2 / torch.tensor([w, h])
            theta = torch.tensor([[s * math.cos(angle), -s * math.sin(angle), float(tx)],
                                  [s * math.sin(angle), s * math.cos(angle), float(ty)]], device=device)
            grid = F.affine_grid(theta[None], [1, c, h, w], align_corners=False)
            return F.grid_sample(img, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

        optimiser = torch.optim.Adam([spectrum], lr=lr)
        for _ in range(int(steps)):
            loss = -(capture(model, layer, (robust(render()) - mean) / std)[0, channel].mean())
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            img = render()[0]
    out = (img * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return out[:, :, 0] if c == 1 else out


def before(model, jobs: dict[str, list[int]], steps: int, size: int) -> list[np.ndarray]:
    return [old_visualize_filter(model, layer, ch, size, steps) for layer, chs in jobs.items() for ch in chs]


def one_at_a_time(model, jobs: dict[str, list[int]], steps: int, size: int) -> list[np.ndarray]:
    return [visualize_filter(model, layer, ch, size=size, steps=steps) for layer, chs in jobs.items() for ch in chs]


def batched(model, jobs: dict[str, list[int]], steps: int, size: int) -> list[np.ndarray]:
    return [img for layer, chs in jobs.items() for img in visualize_filters(model, layer, chs, size=size, steps=steps)]


def timed(fn, *args, **kwargs) -> tuple[float, list[np.ndarray]]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads, for the page (as OMP_NUM_THREADS) and the library calls (default: what the "
                         "app sets, fer_core.predict.use_app_threads)")
    ap.add_argument("--no-grid", action="store_true", help="skip the steps x size table")
    ap.add_argument("--out", type=Path, default=Path("bench/results/filters.md"))
    args = ap.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the app's own setting (use_app_threads) reads it
    load_before = os.getloadavg()

    page_s, page = page_first_load()
    from fer_core.predict import use_app_threads

    use_app_threads()  # as the page ran (AppTest runs it in this process, so this is already so)
    model = create_model(page["model"], num_classes=7).eval()
    by_name = {layer.name: layer for layer in stage_layers(model)}
    jobs = {name: list(range(page["first"], min(page["first"] + page["channels"], by_name[name].channels)))
            for name in page["layers"]}
    n_images = sum(map(len, jobs.values()))
    steps, size = page["steps"], page["size"]

    paths = {"before": before, "one": one_at_a_time, "batched": batched}
    for fn in paths.values():  # warm-up (kernels, allocator)
        fn(model, {name: chs[:1] for name, chs in jobs.items()}, 2, size)
    times: dict[str, list[float]] = {key: [] for key in paths}
    images: dict[str, list[np.ndarray]] = {}
    for _ in range(args.repeats):  # the paths alternate, so a busy spell of the machine hits them alike
        for key, fn in paths.items():
            seconds, images[key] = timed(fn, model, jobs, steps, size)
            times[key].append(seconds)
    per_layer = {name: timed(visualize_filters, model, name, chs, size=size, steps=steps)[0]
                 for name, chs in jobs.items()}
    pairs = list(zip(images["batched"], images["before"], strict=True))
    diffs = [np.abs(a.astype(float) - b.astype(float)) for a, b in pairs]
    corrs = [float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) for a, b in pairs]
    grid = {}
    if not args.no_grid:
        for s in GRID_STEPS:
            for px in GRID_SIZES:
                grid[s, px] = timed(batched, model, jobs, s, px)[0]
    load_after = os.getloadavg()

    med = {key: statistics.median(t) for key, t in times.items()}
    best = {key: min(t) for key, t in times.items()}
    command = "python bench/bench_filters.py" + (f" --repeats {args.repeats}" if args.repeats != 3 else "") + (
        f" --threads {args.threads}" if args.threads else "") + (" --no-grid" if args.no_grid else "")
    lines = [
        f"# Filters page, first load ({page['model']})\n",
        f"`{command}` on {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}. Load average (1 min) "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after: the CPU was shared with other work, so read the "
        "seconds as this run's and the ratio as what carries over.\n",
        f"The page's defaults, read from the page: layers {', '.join(page['layers'])} (the model's stages), channels "
        f"{page['first']} to {page['first'] + page['channels'] - 1} of each, {steps} steps, {size}x{size} pixels: "
        f"{n_images} images ({page['images']} shown by the page).\n",
        "| what | median s | best s |", "|---|---:|---:|",
        f"| the page's first load (AppTest, cold caches; one run) | {page_s:.2f} | {page_s:.2f} |",
        f"| before (reference): the old code, one ascent per channel ({n_images} calls) | {med['before']:.2f} | "
        f"{best['before']:.2f} |",
        f"| one at a time: `visualize_filter` per channel ({n_images} calls) | {med['one']:.2f} | {best['one']:.2f} |",
        f"| batched: one `visualize_filters` per layer ({len(jobs)} calls) | {med['batched']:.2f} | "
        f"{best['batched']:.2f} |",
        f"| **speed-up, before / batched** | **{med['before'] / med['batched']:.1f}x** | "
        f"**{best['before'] / best['batched']:.1f}x** |",
        f"| speed-up of batching alone, one at a time / batched | {med['one'] / med['batched']:.1f}x | "
        f"{best['one'] / best['batched']:.1f}x |", "",
        "Batched, per layer (one call each): " + ", ".join(f"{name} {len(jobs[name])} channels {t:.2f} s"
                                                           for name, t in per_layer.items()) + ".", "",
        f"Goal, first load under 3 s: page {'met' if page_s < 3 else 'missed'} ({page_s:.2f} s), batched work "
        f"{'met' if med['batched'] < 3 else 'missed'} (median {med['batched']:.2f} s).", "",
        f"Batched vs the old code, same seed, {n_images} images: mean absolute difference "
        f"{np.mean([d.mean() for d in diffs]):.2f} grey levels (worst image {max(d.mean() for d in diffs):.2f}), "
        f"largest pixel difference {max(d.max() for d in diffs):.0f}, correlation {min(corrs):.4f} or more "
        "(float32 rounding: batched channels-last convolutions, batch norm as its affine map, amplified by the "
        "ascent; in float64 a batched image equals its one-channel image, tests/test_explain.py).",
    ]
    if grid:
        lines += ["", "Batched, seconds for the same layers and channels at other settings (one run each):", "",
                  "| steps | " + " | ".join(f"{px} px" for px in GRID_SIZES) + " |",
                  "|---:|" + "---:|" * len(GRID_SIZES)]
        lines += [f"| {s} | " + " | ".join(f"{grid[s, px]:.2f}" for px in GRID_SIZES) + " |" for s in GRID_STEPS]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
