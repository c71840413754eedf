"""Hold a whole data set in memory as uint8 tensors, rendering SynthFACS once and caching it on disk.

The cache lives in ``$FER_CACHE_DIR`` (default ``~/.cache/fer_lab``), one ``.npz`` per (data set version, renderer
source, options, split), written atomically; a corrupt or stale file is re-rendered, never trusted.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch


def cache_dir() -> Path:
    """Folder of cached renders: ``$FER_CACHE_DIR`` or ``~/.cache/fer_lab``."""
    return Path(os.environ.get("FER_CACHE_DIR", Path.home() / ".cache" / "fer_lab"))


def _render_range(args) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    options, split, start, stop = args
    from .synthfaces import SynthConfig, render, sample_meta

    cfg = SynthConfig.from_options(**options)
    size = cfg.image_size
    n = stop - start
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), np.uint8)
    occ = np.empty((n, size, size), np.uint8)
    for k, i in enumerate(range(start, stop)):
        images[k], masks[k], occ[k] = render(sample_meta(cfg, split, i).spec, size)
    return images, masks, occ


def render_split(options: dict, split: str, n: int, workers: int | None = None):
    """Render samples 0..n-1 of a SynthFACS split, in parallel over processes when it pays."""
    workers = workers or min(os.cpu_count() or 1, 8)
    if n < 256 or workers == 1:
        return _render_range((options, split, 0, n))
    bounds = np.linspace(0, n, workers * 2 + 1).astype(int)
    jobs = [(options, split, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
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


def _synth_cache(ds) -> None:
    from .synthfaces import VERSION

    options = {k: v for k, v in ds.cfg.to_dict().items()}
    # sample i does not depend on the split sizes: one cache file serves every size up to the largest rendered
    key_opts = {k: v for k, v in options.items() if k not in ("train_size", "val_size", "test_size")}
    n = ds.cfg.size(ds.split)
    payload = {"v": VERSION, "code": _renderer_digest(), "split": ds.split, **key_opts}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode())
    path = cache_dir() / "synthfaces" / f"{ds.split}-{key.hexdigest()[:16]}.npz"
    arrays = None
    if path.exists():
        try:
            with np.load(path) as f:
                if len(f["images"]) >= n and f["images"].shape[1:3] == (ds.image_size, ds.image_size):
                    arrays = (f["images"][:n], f["masks"][:n], f["occluders"][:n])
        except (OSError, ValueError, KeyError, EOFError):
            arrays = None  # unreadable cache: render again and replace it
    if arrays is None:
        arrays = render_split(options, ds.split, n)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, images=arrays[0], masks=arrays[1], occluders=arrays[2])
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    ds.attach_cache(*arrays)


def materialize(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """All images (uint8 N x C x H x W) and hard labels (int64 N) of a data set, in memory.

    SynthFACS splits are rendered once (in parallel) and cached on disk; the data set object then serves
    its samples from the same arrays. Other data sets are read sample by sample.
    """
    if getattr(ds, "name", None) == "synthfaces":
        _synth_cache(ds)
        images = ds._cache[0][ds.split_indices]
        tensor = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        return tensor, torch.from_numpy(ds.labels.copy())
    first = ds[0]["image"]
    out = torch.empty((len(ds), *first.shape), dtype=torch.uint8)
    labels = torch.empty(len(ds), dtype=torch.int64)
    for i in range(len(ds)):
        item = ds[i]
        out[i], labels[i] = item["image"], int(item["label"])
    return out, labels
