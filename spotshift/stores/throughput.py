"""Measured training rates: steps/s per (instance type, model, method, precision), kept in the job
store's database (MongoDB or embedded). A measurement replaces the sizing table's rate for later
estimates and plans of the same shape."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from spotshift.sizing.fit import fit
from spotshift.sizing.model import JobSizing
from spotshift.sizing.speed import V100_FLOPS_PER_HOUR, flops_per_token

COLLECTION = "throughput"


class Throughput(BaseModel):
    """One measured rate: `steps_per_second` of global batches of `tokens_per_step` on `gpus_used` GPUs."""

    model_config = ConfigDict(frozen=True)

    instance_type: str
    model: str = Field(description="the job's model reference (Hub id, s3:// prefix or local path)")
    method: str
    precision: str = Field(description="the precision it ran in (auto resolved)")
    gpus_used: int = Field(ge=1)
    steps_per_second: float = Field(gt=0)
    tokens_per_step: int = Field(ge=1)
    measured_at: datetime

    @property
    def key(self) -> str:
        return throughput_key(self.instance_type, self.model, self.method, self.precision)

    @property
    def tokens_per_second(self) -> float:
        return self.steps_per_second * self.tokens_per_step


def throughput_key(instance_type: str, model: str, method: str, precision: str) -> str:
    return "|".join((instance_type, model, method, precision))


def measured_work_units_per_hour(sizing: JobSizing, measured: Throughput) -> float:
    """The measured rate in V100-hours per hour, for `sizing` (tokens/s do not depend on the batch
    shape to first order; the FLOPs per token are the job's)."""
    return measured.tokens_per_second * 3600 * flops_per_token(sizing) / V100_FLOPS_PER_HOUR


def measurement(sizing: JobSizing, model: str, instance_type: str, steps_per_hour: float,
                measured_at: datetime) -> Throughput | None:
    """What to record after a job ran at `steps_per_hour` on `instance_type` (its precision and GPUs
    used there as the sizing model runs it); None where the job does not fit that type."""
    f = fit(sizing, instance_type)
    if not f.fits or steps_per_hour <= 0:
        return None
    return Throughput(instance_type=instance_type, model=model, method=sizing.shape.method.value,
                      precision=f.precision, gpus_used=f.gpus_used, steps_per_second=steps_per_hour / 3600,
                      tokens_per_step=sizing.tokens_per_step, measured_at=measured_at)


def measured_rates(sizing: JobSizing, measurements: Iterable[Throughput]) -> dict[str, float]:
    """instance type -> measured V100-hours per hour, for the measurements of the job's shape: the
    same precision and GPUs used as the job would run with there."""
    out = {}
    for m in measurements:
        f = fit(sizing, m.instance_type)
        if f.fits and f.precision == m.precision and f.gpus_used == m.gpus_used:
            out[m.instance_type] = measured_work_units_per_hour(sizing, m)
    return out


@runtime_checkable
class ThroughputRecords(Protocol):
    """What the flows use of the measured training rates (ThroughputStore below)."""

    def record(self, measured: Throughput) -> None: ...
    def get(self, instance_type: str, model: str, method: str, precision: str) -> Throughput | None: ...
    def for_model(self, model: str, method: str) -> list[Throughput]: ...


class ThroughputStore:
    """The latest measurement per (instance type, model, method, precision), `_id` = that key."""

    def __init__(self, database, *, write_lock: AbstractContextManager | None = None):
        self._rates = database[COLLECTION]
        self._lock = write_lock if write_lock is not None else nullcontext()

    def record(self, measured: Throughput) -> None:
        doc = {**measured.model_dump(mode="json"), "_id": measured.key,
               "measured_at": measured.measured_at.astimezone(UTC).isoformat()}
        with self._lock:
            self._rates.replace_one({"_id": measured.key}, doc, upsert=True)

    def get(self, instance_type: str, model: str, method: str, precision: str) -> Throughput | None:
        doc = self._rates.find_one({"_id": throughput_key(instance_type, model, method, precision)})
        return None if doc is None else Throughput.model_validate({k: v for k, v in doc.items() if k != "_id"})

    def for_model(self, model: str, method: str) -> list[Throughput]:
        """Every measurement of `model` trained with `method`, any instance type and precision."""
        docs = self._rates.find({"model": model, "method": method})
        return [Throughput.model_validate({k: v for k, v in d.items() if k != "_id"}) for d in docs]
