"""The instance's local disk for a job: what the trainer writes there at its peak, and the root EBS
volume that holds it, or only the image when the type's NVMe instance store takes the job's data."""

from __future__ import annotations

import math
from dataclasses import dataclass

from spotshift.models import Job
from spotshift.sizing.memory import CHECKPOINT_BYTES_PER_TRAINABLE
from spotshift.sizing.model import JobSizing

GIB = 1024**3
GB = 10**9  # instance store sizes are published in decimal GB
STORED_BYTES_PER_PARAM = 4  # downloaded and final weights counted at fp32: the largest the trainer reads or writes
DATA_MARGIN = 0.2  # on the job's data: a Hub dataset's cache, tokenizer files, the file system's own share
ROOT_MARGIN_GIB = 10  # on the image: the trainer's packages, pip's cache, logs, the image's own writes
GP3_MAX_GIB = 16_384  # EBS gp3's largest volume


class RootVolumeTooLarge(ValueError):
    """The job's data does not fit the instance store and would need a root volume above the cap."""

    def __init__(self, size_gib: int, max_gib: int, instance_type: str, detail: str):
        self.size_gib, self.max_gib = size_gib, max_gib
        super().__init__(f"the job needs a {size_gib} GiB root volume on {instance_type} ({detail}), above "
                         f"root_volume_max_gib={max_gib} (SPOTSHIFT_ROOT_VOLUME_MAX_GIB); a type whose "
                         "instance store holds the job's data needs no more than the image")


@dataclass(frozen=True)
class DiskNeed:
    """Bytes the trainer keeps on local disk at its peak. Checkpoints are uploaded from memory, so
    only the one a resume downloads counts; S3 keeps the job's `keep_checkpoints`."""

    model_bytes: int  # the base model: the Hub cache (HF_HOME) or the s3:// prefix downloaded to scratch
    checkpoint_bytes: int  # the checkpoint a resume downloads to scratch: weights and optimizer state
    output_bytes: int  # final/ written to scratch before its upload
    dataset_bytes: int = 0  # a Hub dataset's cache, where its size is known (s3 and local files are read into memory)

    @property
    def total_bytes(self) -> int:
        return self.model_bytes + self.checkpoint_bytes + self.output_bytes + self.dataset_bytes

    @property
    def with_margin_gib(self) -> int:
        return math.ceil(self.total_bytes * (1 + DATA_MARGIN) / GIB)

    def describe(self) -> str:
        parts = {"model": self.model_bytes, "checkpoint": self.checkpoint_bytes, "final model": self.output_bytes,
                 "dataset": self.dataset_bytes}
        return ", ".join(f"{name} {bytes_ / GIB:.1f}" for name, bytes_ in parts.items() if bytes_) + \
            f" GiB, +{DATA_MARGIN:.0%}"


def disk_need(sizing: JobSizing, *, merge_adapter: bool = False, model_bytes: int | None = None,
              checkpoint_bytes: int | None = None, dataset_bytes: int | None = None) -> DiskNeed:
    """The need of a job of this sizing. Known sizes (the model's stored bytes, a checkpoint's
    manifest total) replace the estimates: parameters x 4 bytes for the model and the final weights,
    trainable parameters x 12 bytes (fp32 weights and AdamW's two moments) for a checkpoint; LoRA
    checkpoints and outputs hold the adapters only, plus the merged model when merge_adapter."""
    params, trainable = sizing.model.params, sizing.trainable_params
    output = trainable * STORED_BYTES_PER_PARAM
    if sizing.shape.adapters and merge_adapter:
        output += params * STORED_BYTES_PER_PARAM
    return DiskNeed(
        model_bytes=model_bytes if model_bytes is not None else params * STORED_BYTES_PER_PARAM,
        checkpoint_bytes=checkpoint_bytes if checkpoint_bytes else trainable * CHECKPOINT_BYTES_PER_TRAINABLE,
        output_bytes=output, dataset_bytes=dataset_bytes or 0)


def job_disk_need(job: Job) -> DiskNeed | None:
    """The need of a stored job (None when its model could not be sized); a measured checkpoint
    (the latest manifest's size) replaces the estimate."""
    if job.sizing is None:
        return None
    measured = int(job.measured.checkpoint_gb * GB) or None
    return disk_need(job.sizing, merge_adapter=job.request.merge_adapter, checkpoint_bytes=measured)


@dataclass(frozen=True)
class RootVolume:
    """The root EBS volume (gp3) of one launch, and where the job's data goes."""

    size_gib: int
    data_on_instance_store: bool  # HF_HOME, the datasets cache and TMPDIR on the instance store
    detail: str  # what it holds, for the log


def plan_root_volume(image_root_gib: int, need: DiskNeed | None, instance_type: str,
                     instance_store: tuple[int, int], *, max_gib: int) -> RootVolume:
    """The root volume for `need` on a type with `instance_store` (disks, GB per disk).

    The job's data goes to the instance store when one disk of it holds the data with its margin
    (the Deep Learning AMI may join all disks at /opt/dlami/nvme; the bootstrap's fallback formats
    one): the root volume is then the image plus ROOT_MARGIN_GIB. Otherwise the root volume holds
    the data too. An unknown need counts as data that fits any instance store (nothing to add).
    RootVolumeTooLarge above max_gib."""
    if image_root_gib < 1:
        raise ValueError(f"image_root_gib must be at least 1, got {image_root_gib}")
    disks, disk_gb = instance_store
    disk_gib = math.floor(disk_gb * GB / GIB) if disks > 0 else 0
    data_gib = need.with_margin_gib if need is not None else 0
    on_store = disk_gib > 0 and data_gib <= disk_gib
    size = image_root_gib + ROOT_MARGIN_GIB + (0 if on_store else data_gib)
    where = f"the instance store ({disk_gib} GiB a disk)" if on_store else "the root volume"
    detail = f"image {image_root_gib} GiB + {ROOT_MARGIN_GIB} GiB; the job's data on {where}" + \
        (f": {need.describe()}" if need is not None else ": its size unknown")
    if size > max_gib:
        raise RootVolumeTooLarge(size, max_gib, instance_type, detail)
    return RootVolume(size_gib=size, data_on_instance_store=on_store, detail=detail)
