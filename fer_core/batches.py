"""Where a split's images live while a run trains or evaluates, and how batches of them reach the model.

Three placements, chosen once per run (``train.data_placement``; ``auto`` picks and the run's log says which and
why):

- ``device``: the whole split as one uint8 tensor on the GPU. A batch is an index into it: no host work, no copy,
  no synchronisation. ``auto`` picks it on CUDA when the split takes at most :data:`DEVICE_SHARE` of the GPU's free
  memory (RAF-DB's 15,339 faces at 100 x 100 are 460 MB).
- ``host``: the uint8 tensor in host memory (``fer_core.data.materialize``; SynthFACS and FER2013 come from an
  on-disk cache); each batch is gathered there and, on a GPU run, copied through pinned buffers while the GPU
  works on the previous batch.
- ``stream``: nothing held; a :class:`torch.utils.data.DataLoader` with ``train.num_workers`` processes decodes
  each batch's samples from the data set (JPEGs read with Pillow), in the order the trainer drew. ``auto`` picks it
  when the split would take more than :data:`HOST_SHARE` of the memory available (AffectNet at 224 x 224 is about
  43 GB). It is the reference pipelines' way, and as slow as theirs.

Every placement yields the same uint8 batches in the same order, so a run's numbers do not depend on it (a test
trains the same run streamed and held in memory and compares the weights). Augmentation happens after this, on
whole batches on the device (:class:`fer_core.transforms.BatchTransform`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Dataset

logger = logging.getLogger(__name__)

Placement = Literal["device", "host", "stream"]
PLACEMENTS = ("auto", "device", "host", "stream")
DEVICE_SHARE = 0.4
"""``auto`` keeps a split on the GPU when it takes at most this share of the GPU's free memory (the rest is for
the model, its activations and the optimiser)."""
HOST_SHARE = 0.5
"""``auto`` streams a split that would take more than this share of the host's available memory."""


@dataclass(frozen=True)
class PlacementChoice:
    """What :func:`choose_placement` decided, with the numbers behind it (for the run's log)."""

    placement: Placement
    reason: str


def available_host_memory() -> int:
    """Bytes of memory available to new allocations (``MemAvailable`` of ``/proc/meminfo``; elsewhere the total
    physical memory as ``os.sysconf`` reports it)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def choose_placement(n_bytes: int, device: torch.device | str, setting: str = "auto", *,
                     host_free: int | None = None, device_free: int | None = None) -> PlacementChoice:
    """Where a split of ``n_bytes`` (uint8) should live for training on ``device``.

    Args:
        setting: ``auto`` (see the module docstring), or ``device``, ``host``, ``stream`` to force one; ``device``
            on a CPU run means ``host`` (the host *is* the device).
        host_free, device_free: bytes available (default: measured now); for tests.
    """
    if setting not in PLACEMENTS:
        raise ValueError(f"unknown data placement {setting!r}; valid: {', '.join(PLACEMENTS)}")
    device = torch.device(device)
    size = _gb(n_bytes)
    if setting == "stream":
        return PlacementChoice("stream", f"train.data_placement=stream ({size} of images)")
    if setting == "device" and device.type == "cuda":
        return PlacementChoice("device", f"train.data_placement=device ({size} of images)")
    if setting in ("host", "device"):
        return PlacementChoice("host", f"train.data_placement={setting} on {device.type} ({size} of images)")
    host_free = available_host_memory() if host_free is None else host_free
    if n_bytes > HOST_SHARE * host_free:
        return PlacementChoice("stream", f"{size} of images exceed {HOST_SHARE:.0%} of the {_gb(host_free)} of "
                                         "host memory available")
    if device.type == "cuda":
        if device_free is None:
            device_free = torch.cuda.mem_get_info(device)[0]
        if n_bytes <= DEVICE_SHARE * device_free:
            return PlacementChoice("device", f"{size} of images fit in {DEVICE_SHARE:.0%} of the "
                                             f"{_gb(device_free)} free on {device}")
        return PlacementChoice("host", f"{size} of images exceed {DEVICE_SHARE:.0%} of the {_gb(device_free)} free "
                                       f"on {device}; batches are copied from pinned host memory")
    return PlacementChoice("host", f"{size} of images held in host memory (the CPU is the device)")


class StreamedImages:
    """A split read sample by sample from its data set, batch by batch, never held whole (placement ``stream``).

    Quacks like the uint8 ``N x C x H x W`` tensor of the other placements where the engine needs it: ``len()``,
    ``shape``, ``nbytes`` (what holding it would take). Batches come from :func:`iter_batches`.
    """

    def __init__(self, ds: Dataset, workers: int = 0):
        if len(ds) == 0:
            raise ValueError("cannot stream an empty data set")
        self.ds, self.workers = ds, int(workers)
        first = ds[0]["image"]
        self.shape = torch.Size((len(ds), *first.shape))
        self.dtype = first.dtype
        self.nbytes = math.prod(self.shape) * first.element_size()

    def __len__(self) -> int:
        return self.shape[0]

    def stream(self, batches: Sequence[torch.Tensor], pin: bool = False) -> Iterator[torch.Tensor]:
        """The uint8 images of each index batch in turn, decoded by ``workers`` processes (0: this process)."""
        # its own generator: a DataLoader otherwise draws its workers' seed from the global RNG, which would change
        # the dropout masks and make a streamed run differ from the same run held in memory
        loader = DataLoader(_Images(self.ds), batch_sampler=[b.tolist() for b in batches], num_workers=self.workers,
                            collate_fn=torch.stack, pin_memory=pin, persistent_workers=False,
                            prefetch_factor=4 if self.workers else None, generator=torch.Generator().manual_seed(0))
        yield from loader


class _Images(Dataset):
    """The image tensors of a data set's samples (labels and the rest stay with the trainer)."""

    def __init__(self, ds: Dataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.ds[i]["image"]


def estimated_bytes(ds: Dataset) -> int:
    """Bytes the whole split would take as uint8 (from its first image; loaders of mixed sizes resize to one)."""
    return len(ds) * ds[0]["image"].numel() if len(ds) else 0


def place(images: Any, choice: PlacementChoice | str, device: torch.device | str) -> Any:
    """``images`` (a uint8 tensor, or :class:`StreamedImages`) where ``choice`` says: moved to the device for
    ``device``; left where they are otherwise (host tensors are gathered into pinned buffers per batch)."""
    placement = choice.placement if isinstance(choice, PlacementChoice) else choice
    if placement == "device" and not isinstance(images, StreamedImages):
        return images.to(torch.device(device))
    return images


def iter_batches(images: Any, batches: Sequence[torch.Tensor], device: torch.device | str) -> Iterator[torch.Tensor]:
    """The uint8 images of each index batch (CPU int64 tensors) in order, on ``device``.

    Device-resident images are indexed where they are (no copy, no synchronisation). Host tensors on a GPU run are
    gathered into one of two pinned buffers and copied asynchronously, so the copy of batch k+1 overlaps the GPU's
    work on batch k (a buffer is reused only once its copy is done). :class:`StreamedImages` are decoded by a
    DataLoader, ``workers`` processes ahead.
    """
    device = torch.device(device)
    if isinstance(images, StreamedImages):
        for batch in images.stream(batches, pin=device.type == "cuda"):
            yield batch.to(device, non_blocking=True)
        return
    if images.device.type != "cpu":
        for idx in batches:
            yield images[idx.to(images.device, non_blocking=True)]
        return
    if device.type != "cuda":
        for idx in batches:
            yield images[idx]
        return
    largest = max((len(b) for b in batches), default=0)
    buffers = [torch.empty((largest, *images.shape[1:]), dtype=images.dtype).pin_memory() for _ in range(2)]
    copied: list[torch.cuda.Event | None] = [None, None]
    for k, idx in enumerate(batches):
        slot = k % 2
        if copied[slot] is not None:
            copied[slot].synchronize()  # the copy out of this buffer, two batches ago, has finished
        out = buffers[slot][:len(idx)]
        torch.index_select(images, 0, idx, out=out)
        batch = out.to(device, non_blocking=True)
        copied[slot] = torch.cuda.Event()
        copied[slot].record()
        yield batch


def index_batches(n: int, batch_size: int) -> list[torch.Tensor]:
    """``0..n-1`` in order, in batches of ``batch_size`` (the last one shorter): what evaluation walks over."""
    return [torch.arange(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]
