"""From a stored job and its heartbeat to the plain JobState the policy decides over, and the
pre-run estimate of a job's work (before any step has been measured)."""

from __future__ import annotations

from datetime import datetime

from spotshift.catalog import GPU_MODELS, INSTANCE_TYPES
from spotshift.catalog import work_units_per_hour as instance_rate
from spotshift.models import InterruptionRisk, JobCreate, Market, Offer, Workload

# A V100 (fp16 tensor cores, 125 TFLOPS peak) sustains about 30% of peak in LM fine-tuning.
V100_SUSTAINED_FLOPS = 125e12 * 0.30


def estimate_work_v100_hours(params: int, request: JobCreate) -> float:
    """Training compute of the whole job in V100-hours: 6 x params x tokens FLOPs (forward and
    backward of a dense transformer, Kaplan et al. 2020) at a V100's sustained rate."""
    tokens = request.max_steps * request.batch_size * request.grad_accum * request.seq_len
    return 6.0 * params * tokens / V100_SUSTAINED_FLOPS / 3600.0


def offer_of_workload(w: Workload, observed_at: datetime) -> Offer:
    """The offer a running workload stands for (for re-scouting a job from its ledger row)."""
    t = INSTANCE_TYPES[w.instance_type]
    return Offer(instance_type=t.name, gpu=t.gpu, gpu_count=t.gpu_count,
                 gpu_memory_gib=GPU_MODELS[t.gpu].memory_gib, vcpus=t.vcpus, memory_gib=t.memory_gib,
                 region=w.region, zone=w.zone, market=Market(w.market), usd_per_hour=w.usd_per_hour,
                 interruption=InterruptionRisk(), observed_at=observed_at, source="ledger")


def remaining_work(step: int, max_steps: int, steps_per_hour: float | None, instance_type: str | None,
                   estimate_total: float, work_units_per_hour: float | None = None) -> float:
    """V100-hours of work left: measured (steps/hour on `instance_type`, which does
    `work_units_per_hour` V100-hours of this job's work an hour; default: every GPU of it) once
    known, else the share of the pre-run estimate."""
    left = max(0, max_steps - step)
    if steps_per_hour and instance_type:
        per_hour = work_units_per_hour if work_units_per_hour else instance_rate(instance_type)
        return left / steps_per_hour * per_hour
    return estimate_total * left / max_steps

