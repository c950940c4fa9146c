"""Where a job fits: for one instance type, the GPUs it uses, its precision, DDP or FSDP, the
memory per GPU and on the host, and its rate of work; or why it does not fit."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from spotshift.catalog import GPU_MODELS, INSTANCE_TYPES, InstanceType
from spotshift.models import Precision
from spotshift.sizing.memory import GIB, gpu_memory, host_memory_gib
from spotshift.sizing.model import JobSizing
from spotshift.sizing.speed import work_units_per_hour


@dataclass(frozen=True)
class Fit:
    """How a job runs on one instance type. `reason` is None when it fits."""

    instance_type: str
    gpus_used: int
    precision: str
    sharded: bool  # FSDP: model states spread over the GPUs used
    gpu_memory_per_device_gib: float
    host_memory_gib: float
    work_units_per_hour: float  # V100-hours per hour, 0 when it does not fit
    reason: str | None = None
    measured: bool = False  # the rate is a measurement of this shape, not the table's

    @property
    def fits(self) -> bool:
        return self.reason is None


def resolve_precision(requested: Precision, gpu: str | None) -> str:
    """auto: bf16 where the GPU has it, fp16 (with a loss scaler) where not, fp32 on CPU (gpu None)."""
    if requested is not Precision.AUTO:
        return requested.value
    if gpu is None:
        return "fp32"
    return "bf16" if GPU_MODELS[gpu].bf16 else "fp16"


# training.distributed.choose_sharding's rule (sharding "auto"), mirrored: the trainer shards a full
# fine-tune over several GPUs when its weights, gradients and AdamW moments (16 bytes per parameter)
# exceed this share of one GPU's memory.
TRAINER_STATE_BYTES_PER_PARAMETER = 16
TRAINER_FSDP_FILL = 0.8


def trainer_shards(sizing: JobSizing, world: int, gpu_memory_gib: float) -> bool:
    """True where the trainer will run FSDP rather than DDP (its own rule, see above)."""
    return (not sizing.shape.adapters and world > 1
            and sizing.model.params * TRAINER_STATE_BYTES_PER_PARAMETER > TRAINER_FSDP_FILL * gpu_memory_gib * GIB)


def max_world(sizing: JobSizing) -> int:
    """The most ranks a step can keep busy: each needs at least one sample of the global batch."""
    return sizing.shape.samples_per_step


def fit(sizing: JobSizing, instance_type: str) -> Fit:
    """How `sizing` runs on `instance_type`: on every GPU its global batch keeps busy, DDP, or FSDP
    where the trainer shards (`trainer_shards`); per-GPU need against the GPU's memory, host need
    against the instance's RAM."""
    t = INSTANCE_TYPES[instance_type]
    precision = resolve_precision(sizing.shape.precision, t.gpu)
    world = min(t.gpu_count, max_world(sizing))
    host = host_memory_gib(sizing)
    if precision == "bf16" and not GPU_MODELS[t.gpu].bf16:
        return _no(t, world, precision, host, f"{t.gpu} has no bf16. Choose between auto, fp16, fp32")
    micro = min(sizing.shape.micro_batch, math.ceil(sizing.shape.samples_per_step / world))
    need = gpu_memory(sizing, precision, world=world, micro_batch=micro).total_gib
    sharded = trainer_shards(sizing, world, t.gpu_memory_gib)
    if sharded:
        need = gpu_memory(sizing, precision, world=world, sharded=True, micro_batch=micro).total_gib
    if need > t.gpu_memory_gib:
        how = f"FSDP over {world} GPUs" if sharded else f"{world} GPU(s)"
        return _no(t, world, precision, host, f"needs {need:.1f} GiB per GPU with {how}; {t.gpu} has "
                   f"{t.gpu_memory_gib:g}{_wider_batch_hint(sizing, t, precision, world)}", need, sharded)
    if host > t.memory_gib:
        return _no(t, world, precision, host, f"needs {host:.1f} GiB of host memory; {t.name} has {t.memory_gib:g}",
                   need, sharded)
    rate = work_units_per_hour(t.name, precision, world, sharded=sharded, method=sizing.shape.method)
    return Fit(t.name, world, precision, sharded, need, host, rate)


def _wider_batch_hint(sizing: JobSizing, t: InstanceType, precision: str, world: int) -> str:
    """A full fine-tune held to fewer GPUs than the instance has by its global batch: say whether
    FSDP over all of them would fit."""
    if sizing.shape.adapters or world >= t.gpu_count:
        return ""
    spread = gpu_memory(sizing, precision, world=t.gpu_count, sharded=True, micro_batch=1).total_gib
    if spread > t.gpu_memory_gib:
        return ""
    return f" (FSDP over its {t.gpu_count} GPUs would fit: batch_size x grad_accum of at least {t.gpu_count})"


def _no(t: InstanceType, world: int, precision: str, host: float, reason: str, need: float = 0.0,
        sharded: bool = False) -> Fit:
    return Fit(t.name, world, precision, sharded, need, host, 0.0, reason)


def fits(sizing: JobSizing, instance_types: Iterable[str] | None = None,
         measured: Mapping[str, float] | None = None) -> dict[str, Fit]:
    """The fit on each instance type (default: the whole catalog), feasible or not; a `measured`
    rate (instance type -> V100-hours per hour, spotshift.stores.throughput) replaces the table's."""
    out = {name: fit(sizing, name) for name in (instance_types or INSTANCE_TYPES)}
    for name, rate in (measured or {}).items():
        if name in out and out[name].fits:
            out[name] = replace(out[name], work_units_per_hour=rate, measured=True)
    return out


def work_rates(sizing: JobSizing, measured: Mapping[str, float] | None = None) -> dict[str, float]:
    """instance type -> V100-hours per hour for the types the job fits (a policy's rate table)."""
    return {name: f.work_units_per_hour for name, f in fits(sizing, measured=measured).items() if f.fits}
