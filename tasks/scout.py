"""Scout agent: one market snapshot for a job's needs, cheapest work unit first, cached for a few
minutes across runs (keyed on the query, the market's data and a time bucket), shown as a table."""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.context import TaskRunContext

from spotshift.market.query import OfferQuery
from spotshift.cost_model import usd_per_work_unit
from spotshift.market.source import MarketSource
from spotshift.models import MarketSnapshot, utcnow
from spotshift.settings import get_settings
from tasks.retries import AWS_STEP_RETRY

SETTINGS = get_settings()
TOP_OFFERS = 10
log = logging.getLogger(__name__)


def scout_cache_key(query: OfferQuery, cache_token: str, now: datetime, cache_seconds: float) -> str:
    """Same query, same market, same `cache_seconds` window -> same key (clients play no part)."""
    bucket = int(now.timestamp() // cache_seconds) if cache_seconds > 0 else now.isoformat()
    digest = hashlib.sha256(f"{cache_token}\n{bucket}\n{query.cache_key()}".encode()).hexdigest()
    return f"scout-{digest[:40]}"  # a file name in Prefect's result storage: short and path-safe


def _task_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    if SETTINGS.scout_cache_seconds <= 0:
        return None
    now = parameters.get("now") or utcnow()
    return scout_cache_key(parameters["query"], parameters["market"].cache_token, now, SETTINGS.scout_cache_seconds)


def offers_table(snapshot: MarketSnapshot, top: int = TOP_OFFERS) -> list[dict[str, Any]]:
    """The top offers as artifact rows."""
    return [
        {"rank": i + 1, "instance": o.instance_type, "gpus": f"{o.gpu_count}x {o.gpu}", "zone": o.zone,
         "market": str(o.market), "usd_per_hour": round(o.usd_per_hour, 4),
         "usd_per_v100_hour": round(usd_per_work_unit(o), 4), "risk": o.interruption.bucket or "unknown",
         "source": o.source, "observed_at": o.observed_at.isoformat()}  # issue 11
        for i, o in enumerate(snapshot.offers[:top])
    ]


@task(
    name="scout",
    **AWS_STEP_RETRY,
    cache_key_fn=_task_cache_key,
    cache_expiration=timedelta(seconds=SETTINGS.scout_cache_seconds),
)
def scout(market: MarketSource, query: OfferQuery, now: datetime | None = None, top: int = TOP_OFFERS) -> MarketSnapshot:
    """The offers that fit `query` now, cheapest dollars per V100-hour first; failed regions reported."""
    now = now or utcnow()
    snapshot = market.snapshot(query, now)
    if snapshot.failed_regions:
        log.warning("scout: %d region(s) failed: %s", len(snapshot.failed_regions), ", ".join(snapshot.failed_regions))
    if TaskRunContext.get() is not None:
        create_table_artifact(
            key="scout-offers",
            table=offers_table(snapshot, top),
            description=(f"{len(snapshot.offers)} offers in {', '.join(query.regions)} at {now.isoformat()} "
                         f"({snapshot.source}); failed regions: {', '.join(snapshot.failed_regions) or 'none'}"),
        )
    return snapshot
