"""Hold a whole data set in memory as uint8 tensors, rendering SynthFACS once and caching it on disk.

The cache lives in ``$FER_CACHE_DIR`` (default ``~/.cache/fer_lab``), under ``synthfaces/`` (and
``synthfaces_pretrain/`` for the pretraining faces), one folder per (data set version, renderer source, options,
split) holding ``images.npy``, ``masks.npy`` and ``occluders.npy``, renamed into place once written; a corrupt or
stale cache is re-rendered, never trusted. The arrays are memory-mapped: holding a split in memory costs one copy of
its images (masks and occluders are read from disk only for the samples asked for).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch


def cache_dir() -> Path:
    """Folder of cached renders: ``$FER_CACHE_DIR`` or ``~/.cache/fer_lab``."""
    return Path(os.environ.get("FER_CACHE_DIR", Path.home() / ".cache" / "fer_lab"))


RENDERED = ("synthfaces", "synthfaces_pretrain")
"""The data sets rendered from SynthFACS parameters, which :func:`materialize` renders once and caches on disk."""


def _sampler(kind: str):
    """``(options -> config, (config, split, i) -> SampleMeta)`` of a rendered data set."""
    if kind == "synthfaces_pretrain":
        from .synthfaces_pretrain import PretrainConfig, pretrain_meta

        return PretrainConfig.from_options, pretrain_meta
    if kind != "synthfaces":
        raise ValueError(f"{kind!r} is not a rendered data set; valid: {', '.join(RENDERED)}")
    from .synthfaces import SynthConfig, sample_meta

    return SynthConfig.from_options, sample_meta


def _render_range(args) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    options, split, start, stop, *kind = args  # kind: "synthfaces" unless given (see RENDERED)
    from .synthfaces import render

    make_config, sample = _sampler(kind[0] if kind else "synthfaces")
    cfg = make_config(**options)
    size = cfg.image_size
    n = stop - start
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), np.uint8)
    occ = np.empty((n, size, size), np.uint8)
    for k, i in enumerate(range(start, stop)):
        images[k], masks[k], occ[k] = render(sample(cfg, split, i).spec, size)
    return images, masks, occ


def render_split(options: dict, split: str, n: int, workers: int | None = None, kind: str = "synthfaces"):
    """Render samples 0..n-1 of a SynthFACS split (or of another data set of :data:`RENDERED`), in parallel over
    processes when it pays."""
    workers = workers or min(os.cpu_count() or 1, 8)
    if n < 256 or workers == 1:
        return _render_range((options, split, 0, n, kind))
    bounds = np.linspace(0, n, workers * 2 + 1).astype(int)
    jobs = [(options, split, int(a), int(b), kind) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    with ProcessPoolExecutor(workers) as pool:
        parts = list(pool.map(_render_range, jobs))
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))


@functools.lru_cache(maxsize=1)
def _renderer_digest() -> str:
    """Hash of SynthFACS's source: an edited renderer never reuses renders cached by the old code."""
    digest = hashlib.sha256()
    for path in sorted((Path(__file__).parent / "synthfaces").glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@functools.cache
def _code_digest(kind: str) -> str:
    """:func:`_renderer_digest`, and for a data set built on SynthFACS's sampler (``synthfaces_pretrain``) also the
    hash of its own module, so editing either re-renders its cache."""
    if kind == "synthfaces":
        return _renderer_digest()
    own = hashlib.sha256((Path(__file__).parent / f"{kind}.py").read_bytes()).hexdigest()[:12]
    return f"{_renderer_digest()}-{own}"


ARRAYS = ("images", "masks", "occluders")


def _read_synth(folder: Path, n: int, size: int) -> tuple[np.ndarray, ...] | None:
    """The first ``n`` samples of a cached split, memory-mapped (read from disk only where used), or None when the
    cache is missing, too small, of another size or unreadable."""
    try:
        arrays = tuple(np.load(folder / f"{name}.npy", mmap_mode="r") for name in ARRAYS)
    except (OSError, ValueError, EOFError):
        return None
    images = arrays[0]
    if images.ndim != 4 or len(images) < n or images.shape[1:3] != (size, size) or \
            any(len(a) != len(images) for a in arrays):
        return None
    return tuple(a[:n] for a in arrays)


def _write_synth(folder: Path, arrays: tuple[np.ndarray, ...]) -> None:
    """Save a rendered split as one ``.npy`` per array in a temporary folder, then rename it into place (a stale
    or broken cache there is replaced; a cache another process has just written is kept)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        for name, array in zip(ARRAYS, arrays, strict=True):
            np.save(tmp / f"{name}.npy", array)
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # another process renamed its copy first: keep that one
            os.rename(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _synth_cache(ds) -> None:
    from .synthfaces import VERSION

    kind = ds.name  # one of RENDERED; each has its own folder, and SynthFACS's key is the same as it always was
    options = {k: v for k, v in ds.cfg.to_dict().items()}
    # sample i does not depend on the split sizes: one cache serves every size up to the largest rendered
    key_opts = {k: v for k, v in options.items() if k not in ("train_size", "val_size", "test_size")}
    n = ds.cfg.size(ds.split)
    payload = {"v": VERSION, "code": _code_digest(kind), "split": ds.split, **key_opts}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode())
    folder = cache_dir() / kind / f"{ds.split}-{key.hexdigest()[:16]}"
    arrays = _read_synth(folder, n, ds.image_size)
    if arrays is None:
        rendered = render_split(options, ds.split, n, kind=kind)
        _write_synth(folder, rendered)
        arrays = _read_synth(folder, n, ds.image_size) or rendered  # served from the file when it could be written
    ds.attach_cache(*arrays)


def materialize(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """All images (uint8 N x C x H x W) and hard labels (int64 N) of a data set, in memory.

    SynthFACS splits (and those of the other :data:`RENDERED` data sets) are rendered once (in parallel) and cached
    on disk; the data set object then serves its samples from the same arrays. Other data sets are read sample by
    sample.
    """
    if getattr(ds, "name", None) in RENDERED:
        _synth_cache(ds)
        cached, idx = ds._cache[0], ds.split_indices
        whole = len(idx) == len(cached) and np.array_equal(idx, np.arange(len(cached)))
        images = cached if whole else cached[idx]  # (a whole split is read from the memory map once, below)
        tensor = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        return tensor, torch.from_numpy(ds.labels.copy())
    first = ds[0]["image"]
    out = torch.empty((len(ds), *first.shape), dtype=torch.uint8)
    labels = torch.empty(len(ds), dtype=torch.int64)
    for i in range(len(ds)):
        item = ds[i]
        out[i], labels[i] = item["image"], int(item["label"])
    return out, labels
