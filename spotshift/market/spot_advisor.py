"""Interruption risk from the public Spot Instance Advisor data: fetched at run time, cached on disk,
unknown when neither the network nor a cache is there."""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from spotshift.models import InterruptionRisk

SPOT_ADVISOR_URL = "https://spot-bid-advisor.s3.amazonaws.com/spot-advisor-data.json"
# Advisor bucket index -> (label, numeric monthly interruption estimate: the bucket's midpoint;
# ">20%" is taken as 25%).
BUCKETS: dict[int, tuple[str, float]] = {
    0: ("<5%", 0.025), 1: ("5-10%", 0.075), 2: ("10-15%", 0.125), 3: ("15-20%", 0.175), 4: (">20%", 0.25),
}
UNKNOWN = InterruptionRisk()
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RiskTable:
    """(region, instance type) -> InterruptionRisk; `note` says where it came from or why it is empty."""

    risks: dict[tuple[str, str], InterruptionRisk] = field(default_factory=dict)
    note: str = ""

    def risk(self, region: str, instance_type: str) -> InterruptionRisk:
        return self.risks.get((region, instance_type), UNKNOWN)


def parse_spot_advisor(payload: dict[str, Any], os_name: str = "Linux") -> dict[tuple[str, str], InterruptionRisk]:
    """The advisor JSON ({spot_advisor: {region: {os: {type: {s, r}}}}}) as a risk per (region, type)."""
    out: dict[tuple[str, str], InterruptionRisk] = {}
    for region, by_os in payload.get("spot_advisor", {}).items():
        for instance_type, row in by_os.get(os_name, {}).items():
            bucket = BUCKETS.get(row.get("r"))
            if bucket:
                out[(region, instance_type)] = InterruptionRisk(bucket=bucket[0], probability=bucket[1])
    return out


def fetch_url(url: str = SPOT_ADVISOR_URL, timeout_s: float = 5.0) -> bytes:
    """The advisor JSON over HTTPS (the default fetcher)."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - a fixed https URL
        return response.read()


class SpotAdvisor:
    """Risk table provider: fresh cache file, else fetch (and cache), else stale cache, else unknown."""

    def __init__(self, fetch: Callable[[], bytes] | None = fetch_url, cache_file: Path | None = None,
                 max_age: timedelta = timedelta(hours=6)) -> None:
        self.fetch = fetch
        self.cache_file = cache_file
        self.max_age = max_age
        self._loaded: tuple[datetime, RiskTable] | None = None

    def table(self, now: datetime) -> RiskTable:
        if self._loaded and now - self._loaded[0] < self.max_age:
            return self._loaded[1]
        cached = self._read_cache()
        if cached and now - cached[0] < self.max_age:
            return self._keep(cached[0], RiskTable(parse_spot_advisor(cached[1]), f"spot advisor cache of {cached[0].isoformat()}"))
        try:
            if self.fetch is None:
                raise ConnectionError("no fetcher configured (offline)")
            payload = json.loads(self.fetch())
        except (OSError, ValueError) as exc:
            reason = f"spot advisor unreachable ({type(exc).__name__}: {exc})"
            if cached:
                log.warning("%s; using the cache of %s", reason, cached[0].isoformat())
                return self._keep(now, RiskTable(parse_spot_advisor(cached[1]), f"{reason}; stale cache of {cached[0].isoformat()}"))
            log.warning("%s; interruption risk unknown", reason)
            return self._keep(now, RiskTable({}, f"{reason}; interruption risk unknown"))
        self._write_cache(now, payload)
        return self._keep(now, RiskTable(parse_spot_advisor(payload), f"spot advisor fetched {now.isoformat()}"))

    def _keep(self, at: datetime, table: RiskTable) -> RiskTable:
        self._loaded = (at, table)
        return table

    def _read_cache(self) -> tuple[datetime, dict] | None:
        if not self.cache_file or not self.cache_file.is_file():
            return None
        try:
            doc = json.loads(self.cache_file.read_text())
            return datetime.fromisoformat(doc["fetched_at"]), doc["payload"]
        except (ValueError, KeyError):
            return None

    def _write_cache(self, now: datetime, payload: dict) -> None:
        if self.cache_file:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            self.cache_file.write_text(json.dumps({"fetched_at": now.isoformat(), "payload": payload}))
