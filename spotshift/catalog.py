"""Static facts about AWS GPU capacity: regions, GPU models and GPU instance types.

Used for validation at the edge (what a user may name) and by the market and policy code.
"""

from __future__ import annotations

from dataclasses import dataclass

# AWS commercial regions (opt-in regions included). The scout only visits the ones a job allows.
KNOWN_REGIONS: tuple[str, ...] = (
    "us-east-1", "us-east-2", "us-west-1", "us-west-2",
    "ca-central-1", "ca-west-1", "sa-east-1", "mx-central-1",
    "eu-west-1", "eu-west-2", "eu-west-3", "eu-central-1", "eu-central-2",
    "eu-north-1", "eu-south-1", "eu-south-2",
    "ap-south-1", "ap-south-2", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
    "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4", "ap-southeast-5",
    "ap-east-1", "me-south-1", "me-central-1", "il-central-1", "af-south-1",
)


@dataclass(frozen=True)
class GpuModel:
    """One GPU model: memory per device and training throughput relative to a V100 (= 1.0)."""

    name: str
    memory_gib: float
    relative_throughput: float
    source: str


# Relative mixed-precision training throughput, V100 16 GB = 1.0. Figures are rounded ratios of
# published transformer-training benchmarks (Lambda Labs GPU benchmarks 2022-2024, NVIDIA
# MLPerf Training v3.x per-GPU results) cross-checked against dense FP16/BF16 tensor TFLOPS;
# they rank offers in dollars per unit of work, they are not a promise of speed.
GPU_MODELS: dict[str, GpuModel] = {
    g.name: g
    for g in (
        GpuModel("T4", 16, 0.30, "Lambda benchmarks: T4 ~0.3x V100 on fp16 LM training (65 vs 125 TFLOPS peak, 70 W)"),
        GpuModel("V100", 16, 1.00, "baseline (p3 family)"),
        GpuModel("V100-32GB", 32, 1.00, "same silicon as V100 16 GB (p3dn)"),
        GpuModel("A10G", 24, 0.85, "Lambda/AWS g5 benchmarks: ~0.8-0.9x V100 on fp16 LM training"),
        GpuModel("L4", 24, 0.75, "NVIDIA L4 spec 121 TFLOPS fp16 dense, 300 GB/s: ~0.7-0.8x V100 measured"),
        GpuModel("L40S", 48, 1.90, "NVIDIA L40S 362 TFLOPS fp16 dense; ~1.8-2.0x V100 in LM fine-tuning"),
        GpuModel("A100", 40, 2.30, "Lambda benchmarks: A100 40 GB ~2.2-2.5x V100 (BF16/TF32 LM training)"),
        GpuModel("A100-80GB", 80, 2.60, "A100 80 GB: faster HBM2e, ~1.1x A100 40 GB"),
        GpuModel("H100", 80, 5.00, "MLPerf Training v3.0: H100 SXM ~2.0-2.3x A100 per GPU"),
        GpuModel("H200", 141, 5.60, "H200: H100 silicon with 4.8 TB/s HBM3e, ~1.1-1.2x H100"),
    )
}


@dataclass(frozen=True)
class InstanceType:
    """One EC2 GPU instance type (from AWS's published specifications)."""

    name: str
    gpu: str
    gpu_count: int
    vcpus: int
    memory_gib: float

    @property
    def gpu_memory_gib(self) -> float:
        return GPU_MODELS[self.gpu].memory_gib

    @property
    def total_gpu_memory_gib(self) -> float:
        return self.gpu_memory_gib * self.gpu_count

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]


def _types(family: str, gpu: str, rows: list[tuple[str, int, int, float]]) -> list[InstanceType]:
    return [InstanceType(f"{family}.{size}", gpu, n, cpu, mem) for size, n, cpu, mem in rows]


INSTANCE_TYPES: dict[str, InstanceType] = {
    t.name: t
    for t in (
        _types("g4dn", "T4", [("xlarge", 1, 4, 16), ("2xlarge", 1, 8, 32), ("4xlarge", 1, 16, 64),
                               ("8xlarge", 1, 32, 128), ("12xlarge", 4, 48, 192),
                               ("16xlarge", 1, 64, 256), ("metal", 8, 96, 384)])
        + _types("g5", "A10G", [("xlarge", 1, 4, 16), ("2xlarge", 1, 8, 32), ("4xlarge", 1, 16, 64),
                                ("8xlarge", 1, 32, 128), ("12xlarge", 4, 48, 192),
                                ("16xlarge", 1, 64, 256), ("24xlarge", 4, 96, 384),
                                ("48xlarge", 8, 192, 768)])
        + _types("g6", "L4", [("xlarge", 1, 4, 16), ("2xlarge", 1, 8, 32), ("4xlarge", 1, 16, 64),
                              ("8xlarge", 1, 32, 128), ("12xlarge", 4, 48, 192),
                              ("16xlarge", 1, 64, 256), ("24xlarge", 4, 96, 384),
                              ("48xlarge", 8, 192, 768)])
        + _types("g6e", "L40S", [("xlarge", 1, 4, 32), ("2xlarge", 1, 8, 64), ("4xlarge", 1, 16, 128),
                                 ("8xlarge", 1, 32, 256), ("12xlarge", 4, 48, 384),
                                 ("16xlarge", 1, 64, 512), ("24xlarge", 4, 96, 768),
                                 ("48xlarge", 8, 192, 1536)])
        + _types("p3", "V100", [("2xlarge", 1, 8, 61), ("8xlarge", 4, 32, 244), ("16xlarge", 8, 64, 488)])
        + _types("p3dn", "V100-32GB", [("24xlarge", 8, 96, 768)])
        + _types("p4d", "A100", [("24xlarge", 8, 96, 1152)])
        + _types("p4de", "A100-80GB", [("24xlarge", 8, 96, 1152)])
        + _types("p5", "H100", [("4xlarge", 1, 16, 256), ("48xlarge", 8, 192, 2048)])
        + _types("p5e", "H200", [("48xlarge", 8, 192, 2048)])
        + _types("p5en", "H200", [("48xlarge", 8, 192, 2048)])
    )
}

KNOWN_GPUS: tuple[str, ...] = tuple(GPU_MODELS)
KNOWN_INSTANCE_TYPES: tuple[str, ...] = tuple(INSTANCE_TYPES)


def work_units_per_hour(instance_type: str) -> float:
    """Training work one hour of this instance does, in V100-hours."""
    t = INSTANCE_TYPES[instance_type]
    return GPU_MODELS[t.gpu].relative_throughput * t.gpu_count
