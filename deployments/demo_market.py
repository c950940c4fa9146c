"""The demo's market: a small trace of the same shape as the real ones (three V100 zones, 60 s
ticks), written so that one run sees one spot interruption and one cheaper zone appearing.

Timeline in market (virtual) minutes from the start:
  0      us-east-1a spot $0.95 (cheapest, available), us-east-2a $1.30, us-west-2a $1.60
  T_lost us-east-1a loses its spot capacity for the rest of the trace   -> interruption
  T_cheap us-west-2a drops to $0.40                                      -> voluntary move
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from spotshift.market.replay import ReplayMarket
from spotshift.catalog import region_of
from spotshift.market.traces import TraceSet

DEMO_ZONES = ("us-east-1a", "us-east-2a", "us-west-2a")


@dataclass(frozen=True)
class DemoTimeline:
    lost_minute: int = 20  # us-east-1a capacity taken back
    cheap_minute: int = 40  # us-west-2a becomes the cheapest zone
    hours: int = 24
    history_hours: int = 24  # before the start, every zone up at its base price (what a scout saw)
    base_prices: tuple[float, float, float] = (0.95, 1.30, 1.60)
    cheap_price: float = 0.40


def demo_traces(start: datetime, timeline: DemoTimeline = DemoTimeline()) -> TraceSet:
    """The demo's trace: `history_hours` of quiet market before `start`, then the timeline."""
    lead = timeline.history_hours * 60
    n = lead + timeline.hours * 60
    available = np.ones((3, n), dtype=bool)
    available[0, lead + timeline.lost_minute:] = False
    prices = np.array([[p] * n for p in timeline.base_prices], dtype=np.float64)
    prices[2, lead + timeline.cheap_minute:] = timeline.cheap_price
    start = start - timedelta(hours=timeline.history_hours)
    return TraceSet(
        names=tuple(f"{z}_v100_1" for z in DEMO_ZONES),
        zones=DEMO_ZONES,
        regions=tuple(region_of(z) for z in DEMO_ZONES),
        gpu="v100",
        start=start,
        tick_seconds=60.0,
        available=available,
        spot_price=prices,
    )


def demo_market(start: datetime, timeline: DemoTimeline = DemoTimeline(), speedup: float = 1.0) -> ReplayMarket:
    """The demo's market replayed from `start` (its history lies before it)."""
    return ReplayMarket(demo_traces(start, timeline), start=start, speedup=speedup,
                        trace_offset_ticks=timeline.history_hours * 60)


def write_trace_folder(traces: TraceSet, folder) -> None:
    """Write a TraceSet as `<zone>_<gpu>_1.csv` files plus `<gpu>_spot_prices.json` (the shape of
    ../shared/traces/skynomad-artifact), so `bench/cost.py --traces` can replay it too."""
    import json
    from datetime import timedelta
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(traces.names):
        rows = ["date,availability"]
        for t in range(traces.n_ticks):
            when = traces.start + timedelta(seconds=t * traces.tick_seconds)
            rows.append(f"{when:%Y-%m-%d %H:%M:%S},{int(traces.available[i, t])}")
        (folder / f"{name}.csv").write_text("\n".join(rows) + "\n")
    (folder / f"{traces.gpu}_spot_prices.json").write_text(
        json.dumps({name: traces.spot_price[i].tolist() for i, name in enumerate(traces.names)})
    )
