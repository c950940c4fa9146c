"""Trace replay as the policies see it: a cached MarketSnapshot per tick, the ticks where it changes, and
an online SpotOutlook estimated from past ticks only."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from spotshift.catalog import GPU_MODELS, INSTANCE_TYPES, InstanceType
from spotshift.market.traces import TraceSet
from spotshift.models import InterruptionRisk, Market, MarketSnapshot, Offer
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
        run_window_h: float | None = None,
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
        self.uptime_window = max(1, round(uptime_window_h / self.tick_hours))
        self.prior_run_ticks = prior_run_hours / self.tick_hours
        self.run_window = None if run_window_h is None else run_window_h / self.tick_hours
        self._up_sum = np.concatenate([[0], np.cumsum(self.available.any(axis=0))])
        self._runs = [_runs(row) for row in self.available]
        self._gaps = [_runs(~row) for row in self.available]
        self._outlooks: dict[int, SpotOutlook] = {}
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

    def last_change(self, tick: int) -> int:
        """The latest tick at or before `tick` where the market changed (0 if none)."""
        i = int(np.searchsorted(self.change_ticks, tick, side="right")) - 1
        return int(self.change_ticks[i]) if i >= 0 else 0

    def outlook(self, tick: int) -> SpotOutlook:
        """The spot statistics as of the last market change at or before `tick`, from that tick and
        earlier ones only: the trailing share of time some zone was up (window ticks before the trace
        count as up: no outage was seen there), per available zone the expected rest of its current
        run (the mean excess over its age of the zone's past runs that outlived that age, with one
        prior run of `prior_run_hours`, or of its age if longer), and per unavailable zone the
        expected rest of its current outage (the same estimate over its past outages)."""
        c = self.last_change(tick)
        cached = self._outlooks.get(c)
        if cached is not None:
            return cached
        lo = max(0, c + 1 - self.uptime_window)
        unseen = self.uptime_window - (c + 1 - lo)  # window ticks before the trace: no outage seen there
        uptime = (float(self._up_sum[c + 1] - self._up_sum[lo]) + unseen) / self.uptime_window
        run_hours, gap_hours = {}, {}
        for z, up in enumerate(self.available[:, c]):
            rest = self._expected_rest(self._runs[z] if up else self._gaps[z], c)
            (run_hours if up else gap_hours)[self.traces.zones[z]] = rest * self.tick_hours
        out = SpotOutlook(uptime=uptime, run_hours=run_hours, gap_hours=gap_hours)
        self._outlooks[c] = out
        return out

    def _expected_rest(self, spells: tuple[np.ndarray, np.ndarray], tick: int) -> float:
        """Expected ticks left of the spell (run or outage) in progress at `tick`: the mean excess
        over its age of the past spells that outlived that age, plus one prior spell."""
        starts, lengths = spells
        i = int(np.searchsorted(starts, tick, side="right")) - 1
        age = tick - starts[i]
        first = 0 if self.run_window is None else int(np.searchsorted(starts, tick - self.run_window))
        past = lengths[first:i]
        longer = past[past > age]
        prior = max(float(age), self.prior_run_ticks)
        return (float((longer - age).sum()) + prior) / (len(longer) + 1)

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


def _runs(available: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start ticks and lengths (in ticks) of the runs of True in `available`, in order."""
    edges = np.diff(np.concatenate([[0], available.astype(np.int8), [0]]))
    starts = np.flatnonzero(edges == 1)
    return starts, np.flatnonzero(edges == -1) - starts
