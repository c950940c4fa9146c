"""One memory and speed model of training, used by the optimizer, the estimate and the simulator."""

from spotshift.sizing.fit import Fit, fit, fits, resolve_precision, work_rates
from spotshift.sizing.memory import GpuMemory, gpu_memory, host_memory_gib, single_gpu_memory_gib
from spotshift.sizing.model import JobSizing, LinearGroup, ModelSize, TrainingShape
from spotshift.sizing.speed import flops_per_token, job_work_v100_hours, work_units_per_hour, work_v100_hours

__all__ = ["Fit", "GpuMemory", "JobSizing", "LinearGroup", "ModelSize", "TrainingShape", "fit", "fits",
           "flops_per_token", "gpu_memory", "host_memory_gib", "job_work_v100_hours", "resolve_precision", "single_gpu_memory_gib", "work_rates",
           "work_units_per_hour", "work_v100_hours"]
