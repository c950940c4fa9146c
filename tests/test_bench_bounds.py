"""bench/bounds.py: the clairvoyant market's run_hours are the true rest of each run; its jobs cost no less than the optimum."""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from spotshift.market.traces import TraceSet
from spotshift.sim import TraceMarket

TICK_S = 600.0
ZONES = ("us-east-1a", "us-east-1b", "us-west-2a")


def _load_bounds():
    path = Path(__file__).resolve().parents[1] / "bench" / "bounds.py"
    spec = importlib.util.spec_from_file_location("bench_bounds", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bounds = _load_bounds()


def traces(seed: int, n_ticks: int = 400) -> TraceSet:
    rng = np.random.default_rng(seed)
    runs = rng.integers(1, 30, (len(ZONES), n_ticks // 2))
    states = rng.random((len(ZONES), n_ticks // 2)) < 0.6
    available = np.stack([np.repeat(s, r)[:n_ticks] for s, r in zip(states, runs)])
    prices = (rng.uniform(0.8, 1.8, (len(ZONES), 1)) * (1 + 0.1 * rng.random((len(ZONES), n_ticks)))).round(3)
    return TraceSet(
        names=tuple(f"{z}_v100_1" for z in ZONES), zones=ZONES, regions=tuple(z[:-1] for z in ZONES),
        gpu="v100", start=datetime(2026, 1, 1, tzinfo=UTC), tick_seconds=TICK_S,
        available=available, spot_price=prices,
    )


def rest_of_run(row: np.ndarray, tick: int) -> int:
    """Ticks from `tick` until `row` is next False, walking forward."""
    end = tick
    while end < len(row) and row[end]:
        end += 1
    return end - tick


@pytest.mark.parametrize("seed", range(3))
def test_clairvoyant_run_hours_are_the_true_rest_of_each_run(seed):
    ts = traces(seed)
    online = TraceMarket(ts, 3.06)
    clairvoyant = bounds.ClairvoyantRunMarket(ts, 3.06)
    rng = np.random.default_rng(seed)
    for tick in [0, *rng.integers(1, ts.n_ticks, 12), ts.n_ticks - 1]:
        tick = int(tick)
        expected = {z: rest_of_run(ts.available[i], tick) * TICK_S / 3600
                    for i, z in enumerate(ZONES) if ts.available[i, tick]}
        got = clairvoyant.outlook(tick)
        assert got.run_hours == pytest.approx(expected)
        assert got.uptime == online.outlook(tick).uptime  # only run_hours is clairvoyant


def test_clairvoyant_is_exact_between_market_changes():
    # one zone up for ticks 2..11: the online outlook is cached from tick 2, the true rest shrinks every tick
    available = np.zeros((1, 20), dtype=bool)
    available[0, 2:12] = True
    ts = TraceSet(names=("us-east-1a_v100_1",), zones=("us-east-1a",), regions=("us-east-1",), gpu="v100",
                  start=datetime(2026, 1, 1, tzinfo=UTC), tick_seconds=TICK_S, available=available,
                  spot_price=np.ones((1, 20)))
    m = bounds.ClairvoyantRunMarket(ts, 3.06)
    assert [m.outlook(t).run_hours["us-east-1a"] * 6 for t in (2, 5, 11)] == pytest.approx([10, 7, 1])
    assert m.outlook(12).run_hours == {}


@pytest.mark.parametrize("seed", range(2))
def test_run_start_costs_no_less_than_the_optimum(seed):
    ts = traces(seed)
    rows = bounds.run_start(TraceMarket(ts, 3.06), bounds.ClairvoyantRunMarket(ts, 3.06), 5, ZONES[0],
                            [0.6, 0.9], 0.2, work_hours=10.0)
    assert [r.jf for r in rows] == [0.6, 0.9]
    for r in rows:
        assert r.clairvoyant_on_time and r.online_on_time
        assert 0 < r.optimum <= r.clairvoyant_cost + 1e-9
        assert r.optimum <= r.online_cost + 1e-9
        assert r.clairvoyant_cost < 10.0 * 3.06 * 1.5  # below on-demand for the whole job plus changeovers
    summary = bounds.summarize(rows, 0.2)
    assert [s["runs"] for s in summary] == [1, 1]
    assert all(s["clairvoyant_mean_cost_over_opt"] >= 1 - 1e-9 for s in summary)
