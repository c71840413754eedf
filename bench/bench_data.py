"""FER2013 loading: first load and cached load of a full-size ``fer2013.csv``, against plain pandas in the same run.

The benchmark writes a FER2013-format CSV of random pixels (seeded; 35,887 rows by default, in the published
order and proportions: 28,709 Training, 3,589 PublicTest, 3,589 PrivateTest) into a temporary folder, then times
on that file, in one process:

* reference: ``pandas.read_csv`` and a per-row parse of the pixel strings into a (N, 48, 48) uint8 array, the way
  the reference FER repositories load FER2013 (``np.array(s.split(), dtype=np.uint8)``; the per-row
  ``np.fromstring(s, dtype=np.uint8, sep=" ")`` variant is timed too);
* FER Lab first load: ``load_fer2013_csv`` with an empty cache folder (hash the file, parse, write the ``.npz``);
  the parse alone and the hash alone are shown as parts of it;
* FER Lab cached load: the second call, which hashes the CSV and reads the ``.npz``;
* ``build_dataset("fer2013", split="train", cache_dir=...)`` from the cache: what a training run pays.

Each is repeated ``--repeats`` times (median and min; the cached loads 3x as often), the loaders taking turns. The
first call of each runs in a fresh child process (timed inside it, start-up excluded), which also gives its peak
memory: the rise of its peak resident memory (VmHWM) over its resident memory before the call (Linux only; the
returned arrays count). The reference and FER Lab pixels are checked to be identical to each other and to the
generated ones. The CSV is read from the page cache (it was just written): the times are parsing and hashing, not
disk reads.

    python bench/bench_data.py [--rows 35887] [--repeats 3] [--out bench/results/data.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import write_report  # noqa: E402  (bench/report.py: the results file)

from fer_core.data import build_dataset  # noqa: E402
from fer_core.data.fer2013 import USAGES, _file_key, load_fer2013_csv, parse_fer2013_csv  # noqa: E402

FULL = {"Training": 28709, "PublicTest": 3589, "PrivateTest": 3589}  # the published file: 35,887 rows


def split_sizes(rows: int) -> dict[str, int]:
    """Rows per Usage in the published proportions, summing to ``rows``."""
    total = sum(FULL.values())
    val = test = round(rows * FULL["PublicTest"] / total)
    return {"Training": rows - val - test, "PublicTest": val, "PrivateTest": test}


def write_csv(path: Path, rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Write a FER2013-format CSV of random pixels; returns what it wrote (pixels, emotion, usage codes).

    The pixel text is made with numpy: each value looked up as 4 bytes (its digits right-aligned, NUL in the unused
    leading places, then a space), and the NULs deleted with ``bytes.translate`` (formatting 82 million values in
    Python would take longer than everything measured here)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (rows, 48 * 48), dtype=np.uint8)
    emotion = rng.integers(0, 7, rows)
    usage = np.repeat(np.arange(len(USAGES)), [split_sizes(rows)[u] for u in USAGES])
    values = np.arange(256)
    text = [np.where(values >= 100, 48 + values // 100, 0), np.where(values >= 10, 48 + values // 10 % 10, 0),
            48 + values % 10, np.full(256, ord(" "))]
    words = np.ascontiguousarray(np.stack(text, 1).astype(np.uint8)).view(np.uint32)[:, 0]  # (256,): 4 bytes each
    length = 1 + (values >= 10) + (values >= 100) + 1  # digits and the space
    with path.open("wb") as fh:
        fh.write(b"emotion,pixels,Usage\n")
        for start in range(0, rows, 4096):
            block = pixels[start:start + 4096]
            joined = words[block].tobytes().translate(None, b"\0")  # "v v ... v " per row, rows back to back
            ends = np.cumsum(length[block].sum(axis=1)).tolist()
            labels = zip(ends, emotion[start:start + 4096].tolist(), usage[start:start + 4096].tolist(), strict=True)
            begin = 0
            for end, emo, use in labels:
                fh.write(b"%d,%s,%s\n" % (emo, joined[begin:end - 1], USAGES[use].encode()))  # no space at the end
                begin = end
    return pixels.reshape(rows, 48, 48), emotion, usage


def reference_split(path: Path) -> np.ndarray:
    """Plain pandas + per-row parse, as the reference FER repositories do it."""
    frame = pd.read_csv(path)
    return np.stack([np.array(s.split(), dtype=np.uint8).reshape(48, 48) for s in frame["pixels"]])


def reference_fromstring(path: Path) -> np.ndarray:
    frame = pd.read_csv(path)
    return np.stack([np.fromstring(s, dtype=np.uint8, sep=" ").reshape(48, 48) for s in frame["pixels"]])


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def loaders(csv: Path, cache: Path) -> dict:
    root = csv.parent
    return {
        "ref": lambda: reference_split(csv),
        "ref_fromstring": lambda: reference_fromstring(csv),
        "first": lambda: load_fer2013_csv(csv, cache_dir=cache),
        "parse": lambda: parse_fer2013_csv(csv),
        "hash": lambda: _file_key(csv),
        "cached": lambda: load_fer2013_csv(csv, cache_dir=cache),
        "dataset": lambda: build_dataset("fer2013", root=root, split="train", cache_dir=cache),
    }


def child_call(key: str, csv: Path, cache: Path) -> None:
    """In a fresh process: time one call of a loader and print its seconds and its peak RSS rise over the RSS
    before the call (MiB; null off Linux), as JSON."""
    fn = loaders(csv, cache)[key]
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
        before = _rss_kib("VmRSS")
    except OSError:
        before = None
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    peak = _rss_kib("VmHWM")
    print(json.dumps({"seconds": seconds, "rss": None if before is None or peak is None else (peak - before) / 1024}))


def measure(keys: tuple[str, ...], csv: Path, caches: dict, repeats: int, setups: dict) -> dict:
    """Median and min seconds of ``repeats`` calls of each loader (``setups[key]`` untimed before each call). The
    first call of each runs in a fresh child process, which also gives its peak RSS rise (in this process, memory
    freed by the earlier measurements would hide part of it); the others run here, the loaders taking turns so
    that other load on the machine falls on all of them alike. Returns per key: median, min, the last result."""
    rows, times = {}, {}
    for key in keys:
        setups.get(key, lambda: None)()
        done = subprocess.run([sys.executable, __file__, "--child", key, "--csv", str(csv), "--cache",
                               str(caches[key])], capture_output=True, text=True, check=True)
        child = json.loads(done.stdout.strip().splitlines()[-1])
        times[key] = [child["seconds"]]
        rows[key] = {"rss": "n/a" if child["rss"] is None else f"{child['rss']:,.0f}"}
    for _ in range(repeats - 1):
        for key in keys:
            setups.get(key, lambda: None)()
            fn = loaders(csv, caches[key])[key]
            start = time.perf_counter()
            rows[key]["result"] = fn()
            times[key].append(time.perf_counter() - start)
    for key in keys:
        rows[key].update(median=statistics.median(times[key]), min=min(times[key]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=sum(FULL.values()))
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the slow measurements (cached: 3x)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/data.md"))
    ap.add_argument("--child", help=argparse.SUPPRESS)  # one timed call in a fresh process: see measure()
    ap.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_call(args.child, args.csv, args.cache)
        return
    if args.repeats < 2:
        ap.error("--repeats must be at least 2 (the first call runs in a child process)")
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fer_bench_data_") as tmp:
        tmp = Path(tmp)
        root = tmp / "fer2013"
        root.mkdir()
        csv = root / "fer2013.csv"
        t = time.perf_counter()
        truth, emotion, usage = write_csv(csv, args.rows)
        write_s = time.perf_counter() - t
        csv_mib = csv.stat().st_size / 2**20

        first, cached = tmp / "first", tmp / "cached"

        def empty_cache() -> None:
            for stale in first.glob("*.npz"):
                stale.unlink()

        caches = {key: cached for key in ("ref", "ref_fromstring", "parse", "hash", "cached", "dataset")}
        caches["first"] = first
        rows = measure(("ref", "ref_fromstring", "first", "parse"), csv, caches, args.repeats, {"first": empty_cache})
        load_fer2013_csv(csv, cache_dir=cached)  # fills the cache for the cached rows (not timed)
        many = 3 * args.repeats
        rows.update(measure(("hash", "cached", "dataset"), csv, caches, many, {}))
        cache_mib = sum(f.stat().st_size for f in cached.glob("*.npz")) / 2**20

        # a benchmark must measure real work: every loader returned the pixels that were written
        for key in ("ref", "ref_fromstring"):
            assert np.array_equal(rows[key]["result"], truth), f"{key}: pixels differ from the generated ones"
        for key in ("first", "parse", "cached"):
            pixels, emo, use = rows[key]["result"]
            assert np.array_equal(pixels, rows["ref"]["result"]), f"{key}: pixels differ from the reference's"
            assert np.array_equal(emo, emotion) and np.array_equal(use, usage), f"{key}: labels or usage differ"
        train = rows["dataset"]["result"]
        assert len(train) == split_sizes(args.rows)["Training"]
        assert np.array_equal(train._pixels, truth[usage == 0])
    total_s = time.perf_counter() - started
    load_after = os.getloadavg()

    ref = rows["ref"]["median"]
    labels = {
        "ref": "(a) reference: `pd.read_csv` + per-row `np.array(s.split(), dtype=np.uint8)`",
        "ref_fromstring": "(a') reference variant: `pd.read_csv` + per-row "
                          "`np.fromstring(s, dtype=np.uint8, sep=\" \")`",
        "first": "(b) FER Lab first load: `load_fer2013_csv`, empty cache (hash + parse + write .npz)",
        "parse": "&nbsp;&nbsp;part of (b): `parse_fer2013_csv` alone",
        "cached": "(c) FER Lab cached load: `load_fer2013_csv` again (hash + read .npz)",
        "hash": "&nbsp;&nbsp;part of (b) and (c): the cache key, blake2b of the whole CSV",
        "dataset": "(d) `build_dataset(\"fer2013\", split=\"train\", cache_dir=...)`, cached",
    }
    order = ("ref", "ref_fromstring", "first", "parse", "cached", "hash", "dataset")

    cores = os.cpu_count() or 1
    busy = load_before[0] > 0.5 or load_after[0] > 0.5
    command = "python bench/bench_data.py" + (f" --rows {args.rows}" if args.rows != sum(FULL.values()) else "") \
        + (f" --repeats {args.repeats}" if args.repeats != 3 else "")
    lines = [
        f"# FER2013 loading: {args.rows:,} rows, first and cached load (CPU)",
        "",
        f"`{command}`, {datetime.date.today().isoformat()}. Machine: {platform.processor() or platform.machine()}, "
        f"{cores} CPU cores, Linux {platform.release()}; Python {platform.python_version()}, numpy {np.__version__}, "
        f"pandas {pd.__version__}. Load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
        + (" (other processes were using the CPU: the times are upper bounds)." if busy else ".")
        + f" Whole run {total_s:.0f} s.",
        "",
        f"The CSV: {csv_mib:,.0f} MiB of random pixels, FER2013 format (written in {write_s:.1f} s, read from the "
        f"page cache). The cache: {cache_mib:,.0f} MiB uncompressed `.npz`. Median and min of "
        f"{args.repeats} calls ({many} for the cached rows), the first in a fresh process; peak RSS rise: that call's "
        "peak resident memory over the resident memory before it (the returned arrays count).",
        "",
        "| what | median s | min s | vs reference (a) | peak RSS rise MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    def versus(key: str) -> str:
        ratio = ref / rows[key]["median"]
        return f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"

    for key in order:
        r = rows[key]
        lines.append(f"| {labels[key]} | {r['median']:.3f} | {r['min']:.3f} | "
                     f"{'1 (reference)' if key == 'ref' else versus(key)} | {r['rss']} |")
    hash_share = rows["hash"]["median"] / rows["cached"]["median"]
    lines += [
        "",
        "All loaders returned the same pixels (checked against each other and the generated ones). "
        f"First load: {versus('first')} than the reference; cached load: {versus('cached')}; a training run's "
        f"data set from the cache: {versus('dataset')}. The whole-file hash is {100 * hash_share:.0f}% of the cached "
        "load (kept: see the `fer_core.data.fer2013` docstring).",
    ]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
