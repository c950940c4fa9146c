"""A market replayed from real spot traces on a virtual clock: demos in minutes, tests deterministic.

Trace time = trace.start + offset + (now - start) * speedup, wrapping around at the trace's end.
"""

from __future__ import annotations

import math

import numpy as np
from datetime import datetime, timedelta

from spotshift.catalog import INSTANCE_TYPES, KNOWN_INSTANCE_TYPES
from spotshift.market.query import OfferQuery
from spotshift.cost_model import rank_offers
from spotshift.market.traces import TraceSet
from spotshift.models import Market, MarketSnapshot, Offer
from spotshift.policy.outlook import ZoneObservation

SOURCE = "replay"


class ReplayMarket:
    """Spot offers of the zones available in the trace at the virtual instant, plus on-demand ones."""

    def __init__(
        self,
        traces: TraceSet,
        *,
        start: datetime,
        speedup: float = 1.0,
        trace_offset_ticks: int = 0,
        instance_type: str = "p3.2xlarge",
        on_demand_usd_per_hour: float = 3.06,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("start must carry a timezone, e.g. datetime.now(UTC)")
        if not speedup > 0 or not math.isfinite(speedup):
            raise ValueError(f"speedup must be a positive number, got {speedup}")
        if instance_type not in INSTANCE_TYPES:
            raise ValueError(f"instance_type {instance_type!r} is unknown. Choose between {', '.join(KNOWN_INSTANCE_TYPES)}")
        if on_demand_usd_per_hour < 0:
            raise ValueError(f"on_demand_usd_per_hour must be >= 0, got {on_demand_usd_per_hour}")
        self.traces = traces
        self.start = start
        self.speedup = speedup
        self.trace_offset_ticks = trace_offset_ticks
        self.instance_type = INSTANCE_TYPES[instance_type]
        self.on_demand_usd_per_hour = on_demand_usd_per_hour
        self._offset_s = (traces.time_of(trace_offset_ticks) - traces.start).total_seconds()

    @property
    def cache_token(self) -> str:
        t = self.traces
        return (f"replay:{t.gpu}:{','.join(t.zones)}:{t.start.isoformat()}:{t.n_ticks}:"
                f"{self.start.isoformat()}:{self.speedup}:{self.trace_offset_ticks}:{self.instance_type.name}")

    def trace_time(self, now: datetime) -> datetime:
        """The instant of the trace that wall-clock `now` replays."""
        elapsed = (now - self.start).total_seconds() * self.speedup
        seconds = (self._offset_s + elapsed) % self.traces.duration.total_seconds()
        return self.traces.start + timedelta(seconds=seconds)

    def tick(self, now: datetime) -> int:
        return self.traces.tick_at(self.trace_time(now))

    def available(self, zone: str, now: datetime) -> bool:
        """Whether `zone`'s spot capacity is available at `now` (False = an interruption is due)."""
        return bool(self.traces.available[self.traces.zone_index(zone), self.tick(now)])

    def spot_price(self, zone: str, now: datetime) -> float:
        """The zone's spot price at `now` in $/h (NaN when the trace has none)."""
        return float(self.traces.spot_price[self.traces.zone_index(zone), self.tick(now)])

    def past_observations(self, now: datetime) -> list[ZoneObservation]:
        """What a scout watching this market would have recorded up to `now`: each zone's state at the
        trace's first tick and at every change since (the history a live outlook is built from)."""
        t = self.traces
        last = self.tick(now)
        origin = self.trace_time(self.start)
        out = []
        for i, zone in enumerate(t.zones):
            flags = t.available[i, : last + 1]
            changes = [0, *(np.flatnonzero(flags[1:] != flags[:-1]) + 1)]
            for tick in changes:
                at = self.start + (t.time_of(int(tick)) - origin) / self.speedup
                out.append(ZoneObservation(zone=zone, at=min(at, now), available=bool(flags[tick]),
                                           price=float(t.spot_price[i, tick])))
        return out

    def snapshot(self, query: OfferQuery, now: datetime) -> MarketSnapshot:
        """Spot offers for zones available now with a known price, and one on-demand offer per zone."""
        offers: list[Offer] = []
        if query.accepts_type(self.instance_type):
            tick = self.tick(now)
            for i, (zone, region) in enumerate(zip(self.traces.zones, self.traces.regions)):
                if region not in query.regions:
                    continue
                price = float(self.traces.spot_price[i, tick])
                if Market.SPOT in query.markets and self.traces.available[i, tick] and not math.isnan(price):
                    offers.append(self._offer(region, zone, Market.SPOT, price, now))
                if Market.ON_DEMAND in query.markets:
                    offers.append(self._offer(region, zone, Market.ON_DEMAND, self.on_demand_usd_per_hour, now))
        return MarketSnapshot(taken_at=now, offers=rank_offers(offers), source=SOURCE)

    def _offer(self, region: str, zone: str, market: Market, usd_per_hour: float, now: datetime) -> Offer:
        t = self.instance_type
        return Offer(
            instance_type=t.name, gpu=t.gpu, gpu_count=t.gpu_count, gpu_memory_gib=t.gpu_memory_gib,
            vcpus=t.vcpus, memory_gib=t.memory_gib, region=region, zone=zone, market=market,
            usd_per_hour=usd_per_hour, observed_at=now, source=SOURCE,
        )
