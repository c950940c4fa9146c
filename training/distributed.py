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
    if device.startswith("cuda") and torch.device(device).index is not None:
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


TRAINING_BYTES_PER_PARAMETER = 16  # full fine-tune: fp32 weights, gradients and AdamW's two moments
FSDP_FILL = 0.8  # of a GPU's memory that weights, gradients and moments may take before sharding


def choose_sharding(requested: str, method: str, world: World, parameters: int, device_bytes: int | None) -> str:
    """'ddp' (a replica per rank) or 'fsdp' (weights, gradients and moments sharded over the ranks).
    auto: FSDP for a full fine-tune on several GPUs whose training state does not fit one of them."""
    if requested != "auto":
        return requested
    if not world.distributed or method != "full" or device_bytes is None:
        return "ddp"
    return "fsdp" if parameters * TRAINING_BYTES_PER_PARAMETER > FSDP_FILL * device_bytes else "ddp"


def device_bytes(device: str) -> int | None:
    """This rank's GPU memory (None on CPU)."""
    if not device.startswith("cuda"):
        return None
    return torch.cuda.get_device_properties(torch.device(device)).total_memory


def wrap(model, world: World, device: str, sharding: str = "ddp"):
    """DDP over the model's trainable parameters, or FSDP (each transformer block sharded, then the
    rest); the model itself for one process."""
    if not world.distributed:
        return model
    if sharding == "fsdp":
        from torch.distributed.fsdp import fully_shard

        blocks = set(getattr(model, "_no_split_modules", None) or ())
        for module in model.modules():
            if type(module).__name__ in blocks:
                fully_shard(module)
        return fully_shard(model)
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [torch.device(device).index] if device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=device_ids)


def gradient_sync(model, enabled: bool):
    """A context in which backward does (or, between micro-batches, does not) reduce gradients."""
    import contextlib

    if hasattr(model, "no_sync"):  # DDP
        return contextlib.nullcontext() if enabled else model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP
        model.set_requires_gradient_sync(enabled)
    return contextlib.nullcontext()


def is_sharded(model) -> bool:
    return hasattr(model, "set_requires_gradient_sync")


def full_state(model, optimizer=None) -> tuple[dict, dict | None]:
    """The full (unsharded) model (and optimizer) state dicts on CPU, gathered on rank 0 (empty
    elsewhere); every rank must call it. The optimizer's state is keyed by parameter name."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    optimizer_state = None if optimizer is None else get_optimizer_state_dict(model, optimizer, options=options)
    return get_model_state_dict(model, options=options), optimizer_state


def load_full_optimizer_state(model, optimizer, state: dict) -> None:
    """Shard a full optimizer state dict (keyed by parameter name) into this rank's optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def unwrap(model):
    return getattr(model, "module", model)
