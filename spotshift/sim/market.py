"""Trace replay as the policies see it: a cached MarketSnapshot per tick, the ticks where it changes, and
the online SpotOutlook of `spotshift.policy.outlook` over the trace's past ticks."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from spotshift.catalog import GPU_MODELS, INSTANCE_TYPES, InstanceType
from spotshift.market.traces import TraceSet
from spotshift.models import InterruptionRisk, Market, MarketSnapshot, Offer
from spotshift.policy.outlook import MarketHistory, OutlookSettings, outlook_as_of, outlook_from_history
from spotshift.policy.state import SpotOutlook

SOURCE = "replay"
_NO_RISK = InterruptionRisk()


def single_gpu_instance(gpu: str) -> InstanceType:
    """The one-GPU instance type of a trace's GPU ('v100' -> p3.2xlarge)."""
    for t in INSTANCE_TYPES.values():
        if t.gpu.lower() == gpu.lower() and t.gpu_count == 1:
            return t
    raise ValueError(f"no one-GPU instance type for GPU {gpu!r}. Known GPUs: {', '.join(GPU_MODELS)}")


class TraceMarket:
    """The zones of a TraceSet plus on-demand in each of their regions, replayed tick by tick.
    A spot offer is listed while its zone is available and its price is known."""

    def __init__(
        self, traces: TraceSet, od_usd_per_hour: float, uptime_window_h: float = 24.0, prior_run_hours: float = 1.0,
        run_window_h: float | None = None, outlook_refresh_h: float = 0.25,
    ) -> None:
        self.traces = traces
        self.od_usd_per_hour = od_usd_per_hour
        self.instance = single_gpu_instance(traces.gpu)
        self.tick_hours = traces.tick_seconds / 3600.0
        self.available = traces.available & ~np.isnan(traces.spot_price)
        self.usd_per_tick = np.nan_to_num(traces.spot_price, nan=0.0) * self.tick_hours
        self.od_usd_per_tick = od_usd_per_hour * self.tick_hours
        self.regions = tuple(dict.fromkeys(traces.regions))
        changed = np.zeros(traces.n_ticks, dtype=bool)
        changed[1:] = (np.diff(self.available.astype(np.int8), axis=1) != 0).any(axis=0) | (
            np.diff(self.usd_per_tick, axis=1) != 0
        ).any(axis=0)
        self.change_ticks = np.flatnonzero(changed)
        self.outlook_settings = OutlookSettings(uptime_window_h, prior_run_hours, run_window_h, outlook_refresh_h)
        self.history = MarketHistory(
            traces.zones, (traces.start.timestamp() + np.arange(traces.n_ticks) * traces.tick_seconds).tolist(),
            self.available.tolist())
        self._outlooks: dict[tuple[float, float] | None, SpotOutlook | None] = {}
        self._offers: dict[tuple[int, float], Offer] = {}
        self._snapshots: dict[int, MarketSnapshot] = {}
        t0 = traces.start
        self.od_offers = [self._offer(r, next(z for z, rr in zip(traces.zones, traces.regions) if rr == r),
                                      Market.ON_DEMAND, od_usd_per_hour, t0) for r in self.regions]

    def time_of(self, tick: int):
        return self.traces.start + timedelta(seconds=tick * self.traces.tick_seconds)

    def next_change(self, tick: int) -> int:
        """The first tick after `tick` where some zone's availability or price differs."""
        i = int(np.searchsorted(self.change_ticks, tick, side="right"))
        return int(self.change_ticks[i]) if i < len(self.change_ticks) else self.traces.n_ticks

    def outlook(self, tick: int) -> SpotOutlook:
        """The policy's outlook at `tick`: `outlook_from_history` over the trace up to that tick (the
        live scout's function, on the same history), cached by the instant it is estimated at."""
        now = self.time_of(tick)
        as_of = outlook_as_of(self.history, now, self.outlook_settings)
        cached = self._outlooks.get(as_of)
        if cached is None:
            cached = self._outlooks[as_of] = outlook_from_history(self.history, now, self.outlook_settings)
        return cached

    def _offer(self, region: str, zone: str, market: Market, price: float, at) -> Offer:
        t = self.instance
        return Offer.model_construct(
            instance_type=t.name, gpu=t.gpu, gpu_count=t.gpu_count, gpu_memory_gib=t.gpu_memory_gib,
            vcpus=t.vcpus, memory_gib=t.memory_gib, region=region, zone=zone, market=market,
            usd_per_hour=price, interruption=_NO_RISK, observed_at=at, source=SOURCE,
        )

    def spot_offer(self, z: int, tick: int) -> Offer:
        price = float(self.traces.spot_price[z, tick])
        key = (z, price)
        if key not in self._offers:
            self._offers[key] = self._offer(self.traces.regions[z], self.traces.zones[z], Market.SPOT, price,
                                            self.time_of(tick))
        return self._offers[key]

    def snapshot(self, tick: int) -> MarketSnapshot:
        snap = self._snapshots.get(tick)
        if snap is None:
            spot = [self.spot_offer(z, tick) for z in np.flatnonzero(self.available[:, tick])]
            snap = MarketSnapshot.model_construct(taken_at=self.time_of(tick), offers=spot + self.od_offers,
                                                  failed_regions={}, source=SOURCE)
            self._snapshots[tick] = snap
        return snap

