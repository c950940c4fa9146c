"""The simulator replays the registered policies: never below the optimum, Safety Net holds."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from spotshift.market.traces import TraceSet
from spotshift.policy import POLICIES, get_policy
from spotshift.sim import TickJob, TraceMarket, optimal_costs, simulate

ZONES = ("us-east-1a", "us-east-1b", "us-west-2a")
TICK_S = 600.0
SAFE = [name for name in POLICIES if name != "skypilot_eager_next_region"]


def market(available: np.ndarray, prices: np.ndarray | None = None, od: float = 3.06) -> TraceMarket:
    n = available.shape[1]
    zones = ZONES[: available.shape[0]]
    if prices is None:
        prices = np.tile(np.linspace(0.9, 1.5, len(zones))[:, None], (1, n))
    traces = TraceSet(
        names=tuple(f"{z}_v100_1" for z in zones), zones=zones, regions=tuple(z[:-1] for z in zones),
        gpu="v100", start=datetime(2026, 1, 1, tzinfo=UTC), tick_seconds=TICK_S,
        available=available.astype(bool), spot_price=prices,
    )
    return TraceMarket(traces, od)


def random_market(seed: int, n_ticks: int = 400) -> TraceMarket:
    rng = np.random.default_rng(seed)
    runs = rng.integers(1, 30, (len(ZONES), n_ticks // 2))
    states = rng.random((len(ZONES), n_ticks // 2)) < 0.6
    available = np.stack([np.repeat(s, r)[:n_ticks] for s, r in zip(states, runs)])
    prices = rng.uniform(0.8, 1.8, (len(ZONES), 1)) * (1 + 0.1 * rng.random((len(ZONES), n_ticks)))
    return market(available, prices.round(3))


def job(jf: float, work_h: float = 10.0, d: float = 0.2) -> TickJob:
    return TickJob.from_hours(work_h, work_h / jf, d, TICK_S)


@pytest.mark.parametrize("seed", range(6))
def test_no_policy_on_time_beats_the_optimum(seed):
    m = random_market(seed)
    jfs = (0.6, 0.8, 0.95)
    jobs = [job(jf) for jf in jfs]
    opt = optimal_costs(m.available, m.usd_per_tick, m.od_usd_per_tick, 5, jobs[0].work_ticks,
                        jobs[0].changeover_ticks, [j.deadline_ticks for j in jobs])
    for name, policy in POLICIES.items():
        for j, best in zip(jobs, opt):
            r = simulate(policy, m, 5, j, home_zone=ZONES[seed % 3])
            if r.on_time:
                assert r.cost_usd >= best - 1e-9, (name, r.cost_usd, best)
                assert r.cost_usd <= 3.06 * (j.work_ticks + 40 * j.changeover_ticks) * TICK_S / 3600


@pytest.mark.parametrize("name", SAFE)
@pytest.mark.parametrize("jf", [0.6, 0.9, 0.95])
def test_safety_net_when_every_zone_is_lost_after_start(name, jf):
    available = np.zeros((3, 200), dtype=bool)
    available[:, :3] = True  # capacity for the first 30 minutes only
    r = simulate(get_policy(name), market(available), 0, job(jf), home_zone="us-east-1a")
    assert r.finished and r.on_time


@pytest.mark.parametrize("name", SAFE)
@pytest.mark.parametrize("period", [2, 3, 7])
def test_safety_net_on_flapping_availability(name, period):
    ticks = np.arange(300)
    available = np.stack([(ticks // period + z) % 2 == 0 for z in range(3)])
    r = simulate(get_policy(name), market(available), 0, job(0.9), home_zone="us-east-1b")
    assert r.finished and r.on_time


def test_eager_next_region_misses_when_capacity_stays_away():
    available = np.zeros((3, 200), dtype=bool)
    available[:, :3] = True
    r = simulate(get_policy("skypilot_eager_next_region"), market(available), 0, job(0.9))
    assert not r.on_time


@pytest.mark.parametrize("seed", range(4))
def test_moves_stay_under_a_bound_per_hour(seed):
    m = random_market(seed, 600)
    j = job(0.7)
    r = simulate(get_policy("spotshift"), m, 0, j)
    hours = r.end_tick * TICK_S / 3600
    assert r.on_time
    # every launch costs a changeover: at most one launch per changeover plus the preemptions
    assert r.changeovers - r.preemptions <= 1 + hours / 1.0


def test_skipping_ticks_changes_nothing():
    m = random_market(11)
    for name, policy in POLICIES.items():
        fast = simulate(policy, m, 3, job(0.8), home_zone="us-east-1b")
        slow = simulate(policy, m, 3, job(0.8), home_zone="us-east-1b", every_tick=True)
        assert fast.cost_usd == pytest.approx(slow.cost_usd) and fast.on_time == slow.on_time, name


def test_charges_per_second_and_the_changeover():
    available = np.ones((1, 100), dtype=bool)
    prices = np.full((1, 100), 1.2)
    m = market(available, prices)
    r = simulate(get_policy("greedy"), m, 0, TickJob.from_hours(1.05, 5, 0.2, TICK_S))
    # 0.2 h changeover (2 ticks of 600 s = 1/3 h) + 1.05 h of work, all at $1.2/h
    assert r.cost_usd == pytest.approx(1.2 * (2 * TICK_S / 3600 + 1.05))
    assert r.changeovers == 1 and r.on_time


@pytest.mark.parametrize("seed", range(3))
def test_billed_ticks_by_kind_add_up_to_the_cost(seed):
    # every billed tick is training on on-demand, training on spot or a changeover; idle is free
    m = random_market(seed)
    j = job(0.8)
    for name, policy in POLICIES.items():
        r = simulate(policy, m, 5, j, home_zone=ZONES[seed % 3])
        if not r.finished:
            continue
        assert r.ticks_on_demand + r.ticks_on_spot == j.work_steps, name
        assert r.ticks_changeover == r.changeovers * j.changeover_ticks or r.preemptions > 0, name
        assert r.ticks_on_demand + r.ticks_on_spot + r.ticks_changeover <= r.end_tick, name
        od_usd = r.ticks_on_demand * m.od_usd_per_tick
        assert r.cost_usd >= od_usd - m.od_usd_per_tick, name  # the last work tick may be partly billed
    od = simulate(get_policy("on_demand"), m, 5, j)
    assert (od.ticks_on_demand, od.ticks_on_spot, od.ticks_changeover) == (j.work_steps, 0, j.changeover_ticks)
    assert od.cost_usd == pytest.approx((j.work_ticks + j.changeover_ticks) * m.od_usd_per_tick)
