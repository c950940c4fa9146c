"""What a scout looks for: regions, instance types or GPUs, markets, and where the job fits (per-GPU
memory with DDP or FSDP, host memory) by the one sizing model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from spotshift.catalog import INSTANCE_TYPES, KNOWN_GPUS, KNOWN_INSTANCE_TYPES, KNOWN_REGIONS, InstanceType
from spotshift.models import JobCreate, Market, Offer
from spotshift.sizing.fit import fit
from spotshift.sizing.model import JobSizing


def _known(values: tuple[str, ...], allowed: tuple[str, ...], field: str) -> tuple[str, ...]:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ValueError(f"{field}: unknown value {bad[0]!r}. Choose between {', '.join(allowed)}")
    return tuple(dict.fromkeys(values))


class OfferQuery(BaseModel):
    """The offers a job can use. None for instance_types / gpus = any GPU instance type in the catalog."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    regions: tuple[str, ...] = Field(min_length=1, description="AWS regions to visit")
    instance_types: tuple[str, ...] | None = Field(default=None, description="None = every catalog type")
    gpus: tuple[str, ...] | None = Field(default=None, description="None = every GPU model")
    markets: tuple[Market, ...] = Field(default=(Market.SPOT, Market.ON_DEMAND), min_length=1)
    min_total_gpu_memory_gib: float = Field(default=0.0, ge=0, description="GPU memory of all GPUs together")
    min_gpu_memory_gib: float = Field(default=0.0, ge=0, description="memory each GPU must have")
    sizing: JobSizing | None = Field(default=None, description="the job: only types it fits (GPU and host memory)")

    @field_validator("regions")
    @classmethod
    def _regions(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _known(v, KNOWN_REGIONS, "regions")

    @field_validator("instance_types")
    @classmethod
    def _types(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if v is None else _known(v, KNOWN_INSTANCE_TYPES, "instance_types")

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if v is None else _known(v, KNOWN_GPUS, "gpus")

    @field_validator("markets")
    @classmethod
    def _markets(cls, v: tuple[Market, ...]) -> tuple[Market, ...]:
        return tuple(dict.fromkeys(v))

    @classmethod
    def for_job(cls, job: JobCreate, need: JobSizing | float) -> OfferQuery:
        """The query for a job's allowed regions/types/GPUs/markets and where it fits: `need` is
        its JobSizing (per-GPU memory with DDP or FSDP, host memory), or the GiB each GPU must have."""
        sized = isinstance(need, JobSizing)
        return cls(
            regions=tuple(job.regions),
            instance_types=None if job.instance_types is None else tuple(job.instance_types),
            gpus=None if job.gpus is None else tuple(job.gpus),
            markets=tuple(job.markets),
            min_gpu_memory_gib=0.0 if sized else float(need),
            sizing=need if sized else None,
        )

    def instance_types_wanted(self) -> list[InstanceType]:
        """Catalog instance types that pass the type, GPU and memory filters, in catalog order."""
        return [t for t in INSTANCE_TYPES.values() if self.accepts_type(t)]

    def accepts_type(self, t: InstanceType) -> bool:
        return (
            (self.instance_types is None or t.name in self.instance_types)
            and (self.gpus is None or t.gpu in self.gpus)
            and t.total_gpu_memory_gib >= self.min_total_gpu_memory_gib
            and t.gpu_memory_gib >= self.min_gpu_memory_gib
            and (self.sizing is None or fit(self.sizing, t.name).fits)
        )

    def accepts(self, offer: Offer) -> bool:
        """True when the offer is in an allowed region and market and its type passes the filters."""
        t = INSTANCE_TYPES.get(offer.instance_type)
        return (
            t is not None
            and offer.region in self.regions
            and offer.market in self.markets
            and self.accepts_type(t)
        )

    def cache_key(self) -> str:
        """A stable text form, for cache keys."""
        return self.model_dump_json()
