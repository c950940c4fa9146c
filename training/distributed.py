"""Data parallel across the GPUs (or CPU processes) of one machine, as started by
`torchrun --standalone --nproc_per_node=<N> -m training --spec ...` (N = 1 included): the world
from torchrun's environment, and the few collectives the trainer needs to keep its ranks agreed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Mapping

import torch

COLLECTIVE_TIMEOUT = timedelta(minutes=30)  # a rank may wait this long for another's checkpoint upload


@dataclass(frozen=True)
class World:
    """This process's place among the training processes; rank 0 talks to storage."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env(environ: Mapping[str, str] = os.environ) -> World:
    """The world torchrun describes in RANK, WORLD_SIZE and LOCAL_RANK (one process without them)."""
    size = int(environ.get("WORLD_SIZE", "1"))
    rank = int(environ.get("RANK", "0"))
    local_rank = int(environ.get("LOCAL_RANK", str(rank)))
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"RANK {rank} / WORLD_SIZE {size}: expected 0 <= RANK < WORLD_SIZE")
    return World(rank, size, local_rank)


def rank_device(world: World, device: str) -> str:
    """Each rank its own GPU (cuda:<LOCAL_RANK>) when the device is CUDA; the CPU otherwise."""
    if device.startswith("cuda") and world.distributed:
        return f"cuda:{world.local_rank}"
    return device


def start(world: World, device: str) -> None:
    """Join the process group (NCCL between GPUs, gloo on CPU); nothing for one process."""
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    if world.distributed and not torch.distributed.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        torch.distributed.init_process_group(backend, rank=world.rank, world_size=world.size,
                                             timeout=COLLECTIVE_TIMEOUT)


def stop(world: World) -> None:
    if world.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def sum_across(world: World, values: list[float], device: str) -> list[float]:
    """The element-wise sum of `values` over all ranks (one small all-reduce); a copy for one process."""
    if not world.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def gather_objects(world: World, obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if not world.distributed:
        return [obj]
    gathered = [None] * world.size
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def barrier(world: World) -> None:
    if world.distributed:
        torch.distributed.barrier()


def wrap(model, world: World, device: str):
    """DistributedDataParallel over the model's trainable parameters (the model itself for one process)."""
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [torch.device(device).index] if device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model):
    return getattr(model, "module", model)
