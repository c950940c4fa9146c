"""The market history the live scouts record: per zone and instant, spot offered or not (and its
price), plus our own launches' capacity errors and preemptions. The outlook the policy gets is
built from it by the same function the simulator applies to a trace's past ticks."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta

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


class MarketHistoryStore:
    """Zone observations in one collection of the job store's database (MongoDB or embedded)."""

    def __init__(self, database, *, write_lock: AbstractContextManager | None = None):
        self._obs = database[COLLECTION]
        self._lock = write_lock if write_lock is not None else nullcontext()
        with self._lock:
            self._obs.create_index([("at", ASCENDING)])

    def record(self, observations: Iterable[ZoneObservation], source: str) -> int:
        docs = [{"zone": o.zone, "at": o.at.astimezone(UTC).isoformat(), "available": o.available,
                 "price": o.price, "source": source} for o in observations]
        if docs:
            with self._lock:
                self._obs.insert_many(docs)
        return len(docs)

    def zones(self) -> set[str]:
        return {d["zone"] for d in self._obs.find({}, {"zone": 1})}

    def observations(self, since: datetime | None = None) -> list[ZoneObservation]:
        """Every observation at or after `since`, oldest first (ties in the order recorded)."""
        query = {"at": {"$gte": since.astimezone(UTC).isoformat()}} if since else {}
        # sorted here, stably (ties keep the order recorded): montydb's own sort is quadratic
        docs = sorted(self._obs.find(query, {"_id": 0}), key=lambda d: d["at"])
        return [ZoneObservation(zone=d["zone"], at=datetime.fromisoformat(d["at"]), available=d["available"],
                                price=d.get("price")) for d in docs]

    def outlook(self, regions: Sequence[str], now: datetime, lookback: timedelta = LOOKBACK,
                settings: OutlookSettings = OutlookSettings()) -> SpotOutlook | None:
        """The outlook from what was recorded in `regions` up to `now` (None: nothing yet)."""
        seen = [o for o in self.observations(since=now - lookback)
                if o.at <= now and any(o.zone.startswith(r) for r in regions)]
        return outlook_from_history(MarketHistory.from_observations(seen), now, settings) if seen else None
