"""What a job needs and where it could run, at what cost, before anything starts: the sizing model
over a market snapshot, ranked by expected cost (`spotshift estimate`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta

from spotshift.market.query import OfferQuery
from spotshift.cost_model import rank_offers
from spotshift.market.source import MarketSource
from spotshift.models import JobCreate, MarketSnapshot, Offer
from spotshift.sizing import (
    Fit, JobSizing, ModelSize, fits, host_memory_gib, job_work_v100_hours, single_gpu_memory_gib,
)
from spotshift.stores.throughput import Throughput, measured_rates

HOUR = timedelta(hours=1)
PARAMS_FROM = {"config": "from config.json; no safetensors weights found",
               "safetensors": "from the safetensors headers",
               "meta-device": "from the model built on the meta device"}


@dataclass(frozen=True)
class Placement:
    """One feasible offer for the job: the GPUs it uses, its price, hours, cost and slack."""

    instance_type: str
    gpus_used: int
    gpu_count: int
    precision: str
    fsdp: bool
    gpu_memory_per_device_gib: float
    market: str
    region: str
    zone: str
    usd_per_hour: float
    usd_per_work_unit: float  # the whole $/h over the work of the GPUs used, per V100-hour
    measured_rate: bool  # the hours come from a measured rate of this shape, not the table
    expected_hours: float
    expected_cost_usd: float
    deadline_slack_hours: float
    within_budget: bool


@dataclass(frozen=True)
class Estimate:
    """A job's needs and its feasible placements, cheapest expected cost first."""

    gpu_memory_per_device_gib: float  # on one GPU of the job's precision, unsharded
    host_memory_gib: float
    params: int
    trainable_params: int
    total_work_v100_hours: float
    offers: list[Placement]
    refused: dict[str, str] = field(default_factory=dict)  # instance type -> why it cannot run the job
    params_from: str = "config"  # config arithmetic, the safetensors headers, or the meta device
    meta_device_params: int | None = None  # the meta-device count, where --meta-check asked for it
    meta_check: str | None = None  # what the meta-device check found, in words

    def to_json(self) -> dict:
        return asdict(self)


def estimate(job: JobCreate, sizing: JobSizing, snapshot: MarketSnapshot, now: datetime,
             measured: Mapping[str, float] | None = None) -> Estimate:
    """Every offer of `snapshot` the job may use and fits (per-GPU and host memory) that finishes
    before the deadline, with its expected hours and cost; the instance types it cannot use, why.
    `measured`: instance type -> measured V100-hours per hour of this shape, used over the table."""
    work = job_work_v100_hours(sizing, job.max_steps)
    query = OfferQuery.for_job(job, sizing)
    by_type = fits(sizing, sorted({o.instance_type for o in snapshot.offers}), measured)
    rates = {name: f.work_units_per_hour for name, f in by_type.items() if f.fits}
    hours_left = (job.deadline - now) / HOUR
    placements, refused = [], {name: f.reason for name, f in by_type.items() if not f.fits}
    for offer in rank_offers((o for o in snapshot.offers if query.accepts(o)), rates):
        f = by_type[offer.instance_type]
        hours = work / f.work_units_per_hour
        if hours > hours_left:
            refused.setdefault(offer.instance_type, f"needs {hours:.1f} h; the deadline is {hours_left:.1f} h away")
            continue
        placements.append(_placement(offer, f, hours, hours_left, job.budget_usd))
    placements.sort(key=lambda p: (p.expected_cost_usd, p.expected_hours))
    return Estimate(gpu_memory_per_device_gib=round(single_gpu_memory_gib(sizing), 2),
                    host_memory_gib=round(host_memory_gib(sizing), 2), params=sizing.model.params,
                    trainable_params=sizing.trainable_params, total_work_v100_hours=round(work, 6),
                    offers=placements, refused=refused, params_from=sizing.model.params_from)


def _placement(offer: Offer, f: Fit, hours: float, hours_left: float, budget_usd: float) -> Placement:
    cost = hours * offer.usd_per_hour
    return Placement(
        instance_type=offer.instance_type, gpus_used=f.gpus_used, gpu_count=offer.gpu_count, precision=f.precision,
        fsdp=f.sharded, gpu_memory_per_device_gib=round(f.gpu_memory_per_device_gib, 2), market=offer.market.value,
        region=offer.region, zone=offer.zone, usd_per_hour=offer.usd_per_hour,
        usd_per_work_unit=round(offer.usd_per_hour / f.work_units_per_hour, 4), measured_rate=f.measured,
        expected_hours=round(hours, 4),
        expected_cost_usd=round(cost, 2), deadline_slack_hours=round(hours_left - hours, 3),
        within_budget=cost <= budget_usd)


def estimate_offline(job: JobCreate, now: datetime, *, market: MarketSource | None = None,
                     size_of: Callable[[str], ModelSize] | None = None,
                     measurements: Iterable[Throughput] = (),
                     meta_size_of: Callable[[dict], ModelSize] | None = None) -> Estimate:
    """`estimate` with the model sized by spotshift.hf.model_size (config.json and the safetensors
    headers; a local directory or the Hub cache) over `market`, by default the embedded on-demand
    table. The snapshot is taken without the job's sizing, so `refused` says why each other type
    cannot run it; `measurements` of this model and method replace the table's rates where their
    shape matches. `meta_size_of` (config.json -> ModelSize; `spotshift estimate --meta-check`
    passes the meta-device model's, which imports torch): checks the count against it, and sizes
    with it where no weights were found and the two differ; the estimate says which."""
    from spotshift.hf import model_size
    from spotshift.market.catalog_market import CatalogMarket

    model = (size_of or model_size)(job.model)
    meta_params, finding = None, None
    if meta_size_of is not None:
        from spotshift.hf import model_config

        meta = meta_size_of(model_config(job.model))
        meta_params, finding = meta.params, _meta_check_finding(model, meta)
        if meta.params != model.params and model.params_from == "config":
            model = meta  # no weights to count: the model transformers builds knows the architecture best
    sizing = JobSizing.of_job(job, model)
    snapshot = (market or CatalogMarket()).snapshot(OfferQuery.for_job(job, 0.0), now)
    same_job = [m for m in measurements if m.model == job.model and m.method == job.method.value]
    est = estimate(job, sizing, snapshot, now, measured_rates(sizing, same_job))
    return replace(est, meta_device_params=meta_params, meta_check=finding)


def _meta_check_finding(model: ModelSize, meta: ModelSize) -> str:
    if meta.params == model.params:
        return f"the meta-device count agrees ({meta.params:,})"
    if model.params_from == "config":
        return (f"the meta-device count ({meta.params:,}) differs from config arithmetic ({model.params:,}): "
                "sized with the meta-device count")
    return (f"the meta-device count ({meta.params:,}) differs from the weights' safetensors headers "
            f"({model.params:,}): sized with the headers' count (the weights as stored)")


def render(est: Estimate, top: int = 10) -> str:
    """The estimate as text: the needs, then the `top` cheapest placements."""
    lines = [f"needs {est.gpu_memory_per_device_gib:.1f} GiB on one GPU (unsharded), "
             f"{est.host_memory_gib:.1f} GiB of host memory; {est.params:,} parameters "
             f"({PARAMS_FROM[est.params_from]}), {est.trainable_params:,} trained; "
             f"{est.total_work_v100_hours:.2f} V100-hours of work",
             f"{'instance':<15} {'GPUs':>5} {'mode':<9} {'GiB/GPU':>7} {'market':<9} {'zone':<14} "
             f"{'$/h':>8} {'hours':>8} {'cost $':>9} {'slack h':>8}"]
    for p in est.offers[:top]:
        mode = f"{p.precision}{'+fsdp' if p.fsdp else ''}"
        lines.append(f"{p.instance_type:<15} {p.gpus_used:>2}/{p.gpu_count:<2} {mode:<9} {p.gpu_memory_per_device_gib:>7.1f} "
                     f"{p.market:<9} {p.zone:<14} {p.usd_per_hour:>8.3f} {p.expected_hours:>8.2f} "
                     f"{p.expected_cost_usd:>9.2f} {p.deadline_slack_hours:>8.1f}")
    if not est.offers:
        lines.append("no offer fits the job and finishes before its deadline")
    lines.append(f"{len(est.offers)} feasible offers; {len(est.refused)} instance types cannot run it "
                 "(--json lists them with the reason)")
    if est.meta_check is not None:
        lines.append(f"meta-device check: {est.meta_check}")
    return "\n".join(lines)


