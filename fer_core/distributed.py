"""Data-parallel training under ``torchrun``: process group set-up, sharding, and reductions.

``torchrun --nproc_per_node N -m fer_core train --config X`` starts N processes; each holds the whole (small) data
set in memory, trains on its shard of every batch, and DistributedDataParallel averages the gradients. Only rank
0 writes the run directory. Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) everything here is a
no-op and training runs in one process.

Backend: NCCL when training on CUDA, gloo on the CPU (which is how the tests run it: two CPU processes).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    """This process's place: ``rank`` of ``size`` processes (``local_rank`` on its machine)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE_PROCESS = World()


def init(device_name: str) -> tuple[World, str]:
    """Join the process group ``torchrun`` describes in the environment, if any.

    Returns the world and the device name this process trains on (``cuda`` becomes ``cuda:<local_rank>``).
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(), device_name
    world = World(rank=int(os.environ["RANK"]), size=size, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    if device_name.startswith("cuda"):
        device_name = f"cuda:{world.local_rank}"
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_name.startswith("cuda") else "gloo",
                                timeout=datetime.timedelta(minutes=30))
    return world, device_name


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` when distributed, else the model itself."""
    if not world.distributed:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def shard(indices: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's share of a batch: every ``size``-th sample starting at ``rank``."""
    return indices[world.rank::world.size] if world.distributed else indices


def all_sum(value: torch.Tensor, world: World) -> torch.Tensor:
    """Sum of a tensor over all ranks (the tensor itself when not distributed)."""
    if not world.distributed:
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def sync_buffers(model: nn.Module, world: World) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, so evaluations agree exactly."""
    if world.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def all_gather_objects(obj, world: World) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` when not distributed)."""
    if not world.distributed:
        return [obj]
    out: list = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()
