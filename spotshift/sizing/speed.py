"""How fast an instance trains a job, and how much work a job is, in V100-hours.

One V100-hour is what a V100 computes in an hour in fp16 at the sustained utilization below. An
instance's rate for a job = per-GPU peak for the job's precision x utilization x GPUs used x the
scaling efficiency of that many GPUs. Measured rates (spotshift.stores.throughput) replace it.
"""

from __future__ import annotations

from spotshift.catalog import GPU_MODELS, INSTANCE_TYPES, V100_FP16_TFLOPS
from spotshift.models import TrainingMethod
from spotshift.sizing.model import JobSizing

# Model FLOPs utilization: an assumption, not a measurement (LM fine-tuning typically sustains
# 30-50% of tensor-core peak, more of the CUDA-core fp32 peak); measurements replace it per shape.
TENSOR_UTILIZATION = 0.30
FP32_UTILIZATION = 0.50
QLORA_SLOWDOWN = 0.70  # dequantizing the NF4 base on every forward and backward (assumption)
# Data-parallel efficiency per extra GPU (assumption): all-reduce over NVLink costs less than over PCIe.
SCALING_LOSS_NVLINK = 0.01
SCALING_LOSS_PCIE = 0.03
FSDP_EFFICIENCY = 0.90  # parameter all-gathers and reduce-scatters on top of DDP's all-reduce

V100_FLOPS_PER_HOUR = V100_FP16_TFLOPS * 1e12 * TENSOR_UTILIZATION * 3600


def scaling_efficiency(instance_type: str, gpus_used: int, *, sharded: bool = False) -> float:
    """Share of `gpus_used` x one GPU's rate that data parallelism keeps (1.0 for one GPU)."""
    t = INSTANCE_TYPES[instance_type]
    loss = SCALING_LOSS_NVLINK if t.nvlink else SCALING_LOSS_PCIE
    eff = max(0.5, 1.0 - loss * (gpus_used - 1))
    return eff * (FSDP_EFFICIENCY if sharded and gpus_used > 1 else 1.0)


def gpu_flops_per_hour(gpu: str, precision: str) -> float:
    """Sustained FLOPs one GPU computes per hour in `precision`."""
    g = GPU_MODELS[gpu]
    utilization = FP32_UTILIZATION if precision == "fp32" else TENSOR_UTILIZATION
    return g.tflops(precision) * 1e12 * utilization * 3600


def work_units_per_hour(instance_type: str, precision: str, gpus_used: int, *, sharded: bool = False,
                        method: TrainingMethod = TrainingMethod.FULL) -> float:
    """V100-hours of work per hour of `instance_type` training on `gpus_used` GPUs in `precision`."""
    t = INSTANCE_TYPES[instance_type]
    if not 1 <= gpus_used <= t.gpu_count:
        raise ValueError(f"gpus_used {gpus_used} must be between 1 and {t.gpu_count} for {instance_type}")
    rate = gpu_flops_per_hour(t.gpu, precision) * gpus_used * scaling_efficiency(instance_type, gpus_used, sharded=sharded)
    if method is TrainingMethod.QLORA:
        rate *= QLORA_SLOWDOWN
    return rate / V100_FLOPS_PER_HOUR


def instance_work_units_per_hour(instance_type: str, gpus_used: int | None = None) -> float:
    """The job-independent rate: mixed precision (bf16 where supported, else fp16), full fine-tune."""
    t = INSTANCE_TYPES[instance_type]
    precision = "bf16" if GPU_MODELS[t.gpu].bf16 else "fp16"
    return work_units_per_hour(instance_type, precision, t.gpu_count if gpus_used is None else gpus_used)


def flops_per_token(sizing: JobSizing) -> float:
    """Training FLOPs per token: forward 2P, backward 4P for a full fine-tune (Kaplan et al. 2020);
    a frozen base skips its weight gradients (backward 2P, plus 6 per adapter parameter);
    gradient checkpointing runs the forward again (+2P)."""
    p = sizing.model.params
    if sizing.shape.adapters:
        flops = 4.0 * p + 6.0 * sizing.trainable_params
    else:
        flops = 6.0 * p
    return flops + (2.0 * p if sizing.shape.gradient_checkpointing else 0.0)


def work_v100_hours(sizing: JobSizing, tokens: int) -> float:
    """The work of training on `tokens` tokens, in V100-hours."""
    return flops_per_token(sizing) * tokens / V100_FLOPS_PER_HOUR


def job_work_v100_hours(sizing: JobSizing, max_steps: int) -> float:
    """The pre-run estimate of a whole job's work: max_steps global batches of seq_len tokens."""
    return work_v100_hours(sizing, max_steps * sizing.tokens_per_step)
