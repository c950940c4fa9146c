"""The market history the live scouts record: per zone and instant, spot offered or not (and its
price), plus our own launches' capacity errors and preemptions. The outlook the policy gets is
built from it by the same function the simulator applies to a trace's past ticks."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from pymongo import ASCENDING

from spotshift.models import Market, MarketSnapshot
from spotshift.policy.outlook import MarketHistory, OutlookSettings, ZoneObservation, outlook_from_history
from spotshift.policy.state import SpotOutlook

COLLECTION = "zone_observations"
LOOKBACK = timedelta(days=14)  # how far back the live outlook reads the recorded history


def observations_from_snapshot(snapshot: MarketSnapshot, known_zones: Iterable[str], at: datetime,
                               regions: Sequence[str]) -> list[ZoneObservation]:
    """What one snapshot says of each zone: offered (cheapest spot price there) or, for a zone seen
    before in one of the snapshot's regions and not offered now, not offered."""
    prices: dict[str, float] = {}
    for offer in snapshot.offers:
        if offer.market is Market.SPOT:
            prices[offer.zone] = min(prices.get(offer.zone, offer.usd_per_hour), offer.usd_per_hour)
    gone = [z for z in known_zones if z not in prices and any(z.startswith(r) for r in regions)]
    return ([ZoneObservation(zone=z, at=at, available=True, price=p) for z, p in sorted(prices.items())]
            + [ZoneObservation(zone=z, at=at, available=False) for z in sorted(gone)])


@runtime_checkable
class ZoneHistory(Protocol):
    """What the flows use of the recorded zone observations (MarketHistoryStore below)."""

    def record(self, observations: Iterable[ZoneObservation], source: str) -> int: ...
    def zones(self) -> set[str]: ...
    def observations(self, since: datetime | None = None) -> list[ZoneObservation]: ...
    def outlook(self, regions: Sequence[str], now: datetime, lookback: timedelta = LOOKBACK,
                settings: OutlookSettings = OutlookSettings()) -> SpotOutlook | None: ...


class MarketHistoryStore:
    """Zone observations in one collection of the job store's database (MongoDB or embedded).

    The history is append-only and read at every decision, so it is read once and kept in memory:
    this process's own records are added as they are written, other processes' (a continuous scout
    elsewhere) are seen within `reload_s` (the outlook itself moves on a 15-minute grid)."""

    def __init__(self, database, *, write_lock: AbstractContextManager | None = None, reload_s: float = 60.0,
                 monotonic: Callable[[], float] = time.monotonic):
        self._obs = database[COLLECTION]
        self._lock = write_lock if write_lock is not None else nullcontext()
        self._reload_s, self._monotonic = reload_s, monotonic
        self._cache: list[ZoneObservation] | None = None
        self._loaded_at = 0.0
        with self._lock:
            self._obs.create_index([("at", ASCENDING)])

    def record(self, observations: Iterable[ZoneObservation], source: str) -> int:
        observations = list(observations)
        docs = [{"zone": o.zone, "at": o.at.astimezone(UTC).isoformat(), "available": o.available,
                 "price": o.price, "source": source} for o in observations]
        if docs:
            with self._lock:
                self._obs.insert_many(docs)
            if self._cache is not None:
                self._cache = sorted([*self._cache, *observations], key=lambda o: o.at)  # stable: ties keep order
        return len(docs)

    def zones(self) -> set[str]:
        return {o.zone for o in self._all()}

    def observations(self, since: datetime | None = None) -> list[ZoneObservation]:
        """Every observation at or after `since`, oldest first (ties in the order recorded)."""
        return [o for o in self._all() if since is None or o.at >= since]

    def _all(self) -> list[ZoneObservation]:
        if self._cache is None or self._monotonic() - self._loaded_at > self._reload_s:
            # sorted here, stably (ties keep the order recorded): montydb's own sort is quadratic
            docs = sorted(self._obs.find({}, {"_id": 0}), key=lambda d: d["at"])
            self._cache = [ZoneObservation(zone=d["zone"], at=datetime.fromisoformat(d["at"]),
                                           available=d["available"], price=d.get("price")) for d in docs]
            self._loaded_at = self._monotonic()
        return self._cache

    def outlook(self, regions: Sequence[str], now: datetime, lookback: timedelta = LOOKBACK,
                settings: OutlookSettings = OutlookSettings()) -> SpotOutlook | None:
        """The outlook from what was recorded in `regions` up to `now` (None: nothing yet)."""
        seen = [o for o in self.observations(since=now - lookback)
                if o.at <= now and any(o.zone.startswith(r) for r in regions)]
        return outlook_from_history(MarketHistory.from_observations(seen), now, settings) if seen else None
