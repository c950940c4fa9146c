"""What the orchestrator learns as it goes, kept for later decisions: each zone's spot capacity
(the history the policy's outlook is built from) and the training rates measured per instance type."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from spotshift.models import MarketSnapshot
from spotshift.policy.outlook import ZoneObservation
from spotshift.stores.market_history import observations_from_snapshot
from spotshift.stores.throughput import Throughput
from tasks.retries import STORE_WRITE_RETRY


@task(name="record-market", cache_policy=NO_CACHE)
def record_market(history: Any, snapshot: MarketSnapshot, regions: Sequence[str], now: datetime) -> int:
    """What a scout saw per zone of `regions` (offered, at its cheapest spot price, or gone); how
    many observations were kept (0 without a history). Not retried: the history only appends."""
    if history is None:
        return 0
    return history.record(observations_from_snapshot(snapshot, history.zones(), now, regions), source="scout")


@task(name="record-zone-lost", cache_policy=NO_CACHE, task_run_name="record-zone-lost-{zone}")
def record_zone_lost(history: Any, zone: str, now: datetime, source: str) -> int:
    """Our own launch found no capacity in `zone` (source capacity_error), or our instance there was
    taken back (preemption). Not retried: the history only appends."""
    if history is None:
        return 0
    return history.record([ZoneObservation(zone=zone, at=now, available=False)], source=source)


@task(name="record-throughput", cache_policy=NO_CACHE, **STORE_WRITE_RETRY)
def record_rate(throughput: Any, measured: Throughput) -> Throughput:
    """A rate measured on an instance type, kept under its (instance type, model, method, precision)
    for later estimates of the same shape: one upsert, retried when the store did not answer."""
    throughput.record(measured)
    return measured
