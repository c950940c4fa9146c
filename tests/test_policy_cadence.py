"""Decisions that do not depend on how often the policy is asked: the cold start that used to idle
into on-demand, and replays asked at every tick vs only at events on random traces."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spotshift.market.traces import TraceSet
from spotshift.models import MarketSnapshot
from spotshift.policy import POLICIES, Move, SpotOutlook, Stay, decide, get_policy
from spotshift.sim import TickJob, TraceMarket, simulate
from tests.test_policy import NOW, OD, offer, state

ZONES = ("us-east-1a", "us-east-1b", "us-west-2a")


def trace_market(available: np.ndarray, prices: np.ndarray, tick_s: float, zones=ZONES) -> TraceMarket:
    zones = zones[: available.shape[0]]
    traces = TraceSet(
        names=tuple(f"{z}_v100_1" for z in zones), zones=zones, regions=tuple(z[:-1] for z in zones),
        gpu="v100", start=datetime(2023, 3, 1, 0, 7, 30, tzinfo=UTC), tick_seconds=tick_s,
        available=available.astype(bool), spot_price=prices,
    )
    return TraceMarket(traces, 3.06)


@pytest.mark.parametrize("every_tick", [False, True])
def test_a_cold_start_in_zones_that_never_go_down_runs_on_spot(every_tick):
    # the case: 195 s ticks, two us-west-2 zones up throughout (no past run, so the outlook
    # starts from its 1 h prior), a 24 h job with a 36 h deadline and a 12-minute changeover. Asked
    # only at events it used to wait out its whole slack (its Stay hint) and then run on on-demand ($74.10).
    tick_s, n = 195.0, 1000
    m = trace_market(np.ones((2, n)), np.full((2, n), 0.95), tick_s, zones=("us-west-2a", "us-west-2b"))
    job = TickJob.from_hours(24.0, 36.0, 0.2, tick_s)
    r = simulate(get_policy("spotshift"), m, 0, job, every_tick=every_tick)
    assert r.on_time and r.preemptions == 0
    assert (r.ticks_on_demand, r.ticks_on_spot, r.changeovers) == (0, job.work_steps, 1)
    spot_usd = (job.work_ticks + job.changeover_ticks) * 0.95 * tick_s / 3600
    assert r.cost_usd == pytest.approx(spot_usd)
    idle_h = (r.end_tick - job.work_steps - job.changeover_ticks) * tick_s / 3600
    slack_h = 36.0 - 24.0 - 2 * job.changeover_ticks * tick_s / 3600  # beyond a changeover to spot and one to on-demand
    assert idle_h < 0.1 * slack_h  # launched while nearly all its slack was left, not at its end


def random_market(seed: int, n_ticks: int, tick_s: float) -> TraceMarket:
    rng = np.random.default_rng(seed)
    runs = rng.integers(1, rng.integers(3, 80), (len(ZONES), n_ticks))
    states = rng.random((len(ZONES), n_ticks)) < rng.uniform(0.2, 0.9)
    available = np.stack([np.repeat(s, r)[:n_ticks] for s, r in zip(states, runs)])
    prices = rng.uniform(0.8, 1.8, (len(ZONES), 1)) * (1 + 0.1 * (rng.random((len(ZONES), n_ticks)) < 0.05))
    return trace_market(available, prices.round(3), tick_s)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), tick_s=st.sampled_from([195.0, 600.0]), jf=st.sampled_from([0.6, 0.8, 0.9, 0.95]),
       d=st.sampled_from([0.05, 0.2]), start=st.integers(0, 200))
def test_asked_at_every_tick_or_only_at_events_it_decides_the_same(seed, tick_s, jf, d, start):
    m = random_market(seed, 600, tick_s)
    job = TickJob.from_hours(8.0, 8.0 / jf, d, tick_s)
    for name in ("spotshift", *POLICIES):
        events = simulate(get_policy(name), m, start, job, home_zone="us-east-1b")
        ticks = simulate(get_policy(name), m, start, job, home_zone="us-east-1b", every_tick=True)
        assert (ticks.cost_usd, ticks.on_time, ticks.changeovers) == pytest.approx(
            (events.cost_usd, events.on_time, events.changeovers)), name


def test_an_idle_job_s_stay_lasts_until_its_patience_would_launch_and_no_longer():
    # patience: launch once 10 changeovers per hour of spare slack per work hour fall below the 0.8 h run,
    # i.e. once the spare (36 - 24 - 0.42 h) is below 9.6 h: in about 2 h
    refresh = NOW + timedelta(hours=3)
    outlook = SpotOutlook(uptime=1.0, run_hours={"us-west-2a": 0.8}, refresh_at=refresh)
    snapshot = MarketSnapshot(taken_at=NOW, offers=[offer("us-west-2a", 0.95), OD])
    job = state(36.0, work=24.0, changeover_hours=0.2, outlook=outlook)  # idle: the same job until it launches
    wait = decide(job, snapshot, NOW)
    assert isinstance(wait, Stay) and (wait.until - NOW) / timedelta(hours=1) == pytest.approx(11.58 - 9.6)
    # asked again at that instant (the same market and outlook) it launches; a minute before, it still waits
    assert isinstance(decide(job, snapshot, wait.until), Move)
    assert isinstance(decide(job, snapshot, wait.until - timedelta(minutes=1)), Stay)


def test_a_job_on_spot_with_no_on_demand_offer_stays_until_the_outlook_refreshes():
    here = offer("us-west-2a", 0.95)
    refresh = NOW + timedelta(minutes=10)
    outlook = SpotOutlook(uptime=1.0, run_hours={"us-west-2a": 5.0}, refresh_at=refresh)
    d = decide(state(30.0, work=10.0, current=here, outlook=outlook), MarketSnapshot(taken_at=NOW, offers=[here]), NOW)
    assert isinstance(d, Stay) and d.until == refresh
