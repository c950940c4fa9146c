"""Static facts about AWS GPU capacity: regions, GPU models and GPU instance types.

Used for validation at the edge (what a user may name) and by the market and policy code.
"""

from __future__ import annotations

import re
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


_ZONE = re.compile(r"^(?P<region>.*\d)[a-z]$")


def region_of(zone: str) -> str:
    """The region of an availability zone: 'us-east-1a' -> 'us-east-1'."""
    m = _ZONE.match(zone)
    if not m:
        raise ValueError(f"zone {zone!r} must look like a region followed by one letter, e.g. us-east-1a")
    return m["region"]


PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class GpuModel:
    """One GPU model: memory per device and dense peak TFLOPS per training precision.

    fp32 is the CUDA-core rate (PyTorch does not use TF32 for matmuls unless asked); fp16 and bf16
    are the tensor-core rates without sparsity. bf16 is None where the GPU has no bf16 (before
    Ampere). `source` cites where each figure comes from.
    """

    name: str
    memory_gib: float
    fp32_tflops: float
    fp16_tflops: float
    bf16_tflops: float | None
    source: str

    @property
    def bf16(self) -> bool:
        return self.bf16_tflops is not None

    def tflops(self, precision: str) -> float:
        """Dense peak TFLOPS in `precision` (fp32, fp16 or bf16); ValueError where it has none."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is unknown. Choose between {', '.join(PRECISIONS)}")
        value = getattr(self, f"{precision}_tflops")
        if value is None:
            raise ValueError(f"{self.name} has no {precision} support. Choose between fp32, fp16")
        return value


V100_FP16_TFLOPS = 125.0

# Dense peak TFLOPS from each vendor's published specification (no sparsity), memory as sold.
GPU_MODELS: dict[str, GpuModel] = {
    g.name: g
    for g in (
        GpuModel("T4", 16, 8.1, 65, None, "NVIDIA T4 datasheet: FP32 8.1, mixed FP16 65 TFLOPS; Turing has no BF16"),
        GpuModel("V100", 16, 15.7, 125, None, "NVIDIA V100 datasheet (SXM2): FP32 15.7, tensor 125 TFLOPS; no BF16"),
        GpuModel("V100-32GB", 32, 15.7, 125, None, "NVIDIA V100 datasheet (SXM2 32 GB, p3dn): FP32 15.7, tensor 125"),
        GpuModel("A10G", 24, 31.2, 70, 70, "Baseten, 'NVIDIA A10 vs A10G' (AWS's A10G spec: FP32 31.2, "
                 "BF16/FP16 tensor 70 TFLOPS dense; NVIDIA publishes no A10G datasheet)"),
        GpuModel("L4", 24, 30.3, 121, 121, "NVIDIA L4 datasheet: FP32 30.3, BF16/FP16 tensor 242 with sparsity = 121 dense"),
        GpuModel("L40S", 48, 91.6, 362, 362, "NVIDIA L40S datasheet: FP32 91.6, BF16/FP16 tensor 733 with sparsity = 362 dense"),
        GpuModel("A100", 40, 19.5, 312, 312, "NVIDIA A100 datasheet (SXM4 40 GB): FP32 19.5, BF16/FP16 tensor 312"),
        GpuModel("A100-80GB", 80, 19.5, 312, 312, "NVIDIA A100 datasheet (SXM4 80 GB): FP32 19.5, BF16/FP16 tensor 312"),
        GpuModel("H100", 80, 67, 989, 989, "NVIDIA H100 datasheet (SXM5): FP32 67, BF16/FP16 tensor 1979 with sparsity = 989 dense"),
        GpuModel("H200", 141, 67, 989, 989, "NVIDIA H200 datasheet (SXM): FP32 67, BF16/FP16 tensor 1979 with sparsity = 989 dense"),
    )
}

# Families whose GPUs talk over NVLink/NVSwitch (the others over PCIe), from AWS's instance pages.
NVLINK_FAMILIES = frozenset({"p3", "p3dn", "p4d", "p4de", "p5", "p5e", "p5en"})


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

    @property
    def nvlink(self) -> bool:
        """True when its GPUs are linked by NVLink/NVSwitch (all-reduce faster than over PCIe)."""
        return self.family in NVLINK_FAMILIES

    @property
    def instance_store(self) -> tuple[int, int]:
        """(disks, GB per disk) of its NVMe instance store; (0, 0) when it has EBS only."""
        return INSTANCE_STORE_DISKS.get(self.name, (0, 0))


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

# NVMe instance store per type: (disks, GB per disk), from EC2 DescribeInstanceTypes
# (InstanceStorageInfo.Disks); types not listed (p3) have EBS only. The Deep Learning AMI mounts it
# at /opt/dlami/nvme (its release notes' nvme_location); training.bootstrap puts the model cache there.
INSTANCE_STORE_DISKS: dict[str, tuple[int, int]] = {
    "g4dn.xlarge": (1, 125), "g4dn.2xlarge": (1, 225), "g4dn.4xlarge": (1, 225), "g4dn.8xlarge": (1, 900),
    "g4dn.12xlarge": (1, 900), "g4dn.16xlarge": (1, 900), "g4dn.metal": (2, 900),
    "g5.xlarge": (1, 250), "g5.2xlarge": (1, 450), "g5.4xlarge": (1, 600), "g5.8xlarge": (1, 900),
    "g5.12xlarge": (1, 3800), "g5.16xlarge": (1, 1900), "g5.24xlarge": (1, 3800), "g5.48xlarge": (2, 3800),
    "g6.xlarge": (1, 250), "g6.2xlarge": (1, 450), "g6.4xlarge": (1, 600), "g6.8xlarge": (2, 450),
    "g6.12xlarge": (4, 940), "g6.16xlarge": (2, 940), "g6.24xlarge": (4, 940), "g6.48xlarge": (8, 940),
    "g6e.xlarge": (1, 250), "g6e.2xlarge": (1, 450), "g6e.4xlarge": (1, 600), "g6e.8xlarge": (2, 450),
    "g6e.12xlarge": (2, 1900), "g6e.16xlarge": (2, 950), "g6e.24xlarge": (2, 1900), "g6e.48xlarge": (4, 1900),
    "p3dn.24xlarge": (2, 900), "p4d.24xlarge": (8, 1000), "p4de.24xlarge": (8, 1000),
    "p5.4xlarge": (1, 3800), "p5.48xlarge": (8, 3800), "p5e.48xlarge": (8, 3800), "p5en.48xlarge": (8, 3800),
}

KNOWN_GPUS: tuple[str, ...] = tuple(GPU_MODELS)
KNOWN_INSTANCE_TYPES: tuple[str, ...] = tuple(INSTANCE_TYPES)


def work_units_per_hour(instance_type: str, gpus_used: int | None = None) -> float:
    """Training work one hour of this instance does, in V100-hours, with `gpus_used` of its GPUs
    (None = all) in mixed precision. A job-specific rate (precision, method, scaling) is
    spotshift.sizing's `work_units_per_hour`; this one is for callers that know no job."""
    from spotshift.sizing.speed import instance_work_units_per_hour

    return instance_work_units_per_hour(instance_type, gpus_used=gpus_used)
