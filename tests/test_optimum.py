"""The offline optimum equals an exhaustive search of every schedule on small random traces."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spotshift.sim.grid import TickJob
from spotshift.sim.optimum import optimal_costs, optimal_schedule


def brute_force(avail: np.ndarray, cost: np.ndarray, od: float, job: TickJob) -> float:
    """Try every action at every tick (stay, idle, launch any instance), by the simulator's rules."""
    n_spot = avail.shape[0]
    steps, frac, q = job.work_steps, job.last_fraction, job.changeover_ticks

    def up(i: int, k: int) -> bool:
        return i == n_spot or bool(avail[i, k])

    def price(i: int, k: int) -> float:
        return od if i == n_spot else float(cost[i, k])

    def go(k: int, inst: int | None, co_left: int, done: int) -> float:
        if k >= job.horizon:
            return math.inf
        if inst is not None and not up(inst, k):
            inst, co_left = None, 0
        options = [(None, 0)] + [(j, q) for j in range(n_spot + 1) if up(j, k)]
        if inst is not None:
            options.append((inst, co_left))
        best = math.inf
        for i, c in options:
            if i is None:
                best = min(best, go(k + 1, None, 0, done))
            elif c > 0:
                best = min(best, price(i, k) + go(k + 1, i, c - 1, done))
            elif done == steps - 1:
                if job.finishes_in_time(k):
                    best = min(best, frac * price(i, k))
            else:
                best = min(best, price(i, k) + go(k + 1, i, 0, done + 1))
        return best

    return go(0, None, 0, 0)


@pytest.mark.parametrize("seed", range(220))
def test_optimum_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_spot = int(rng.integers(1, 3))
    ticks = 9
    avail = rng.random((n_spot, ticks + 3)) < rng.uniform(0.3, 0.9)
    cost = rng.uniform(0.2, 1.0, (n_spot, ticks + 3)).round(2)
    od = 1.5
    q = int(rng.integers(0, 3))
    work = float(rng.choice([2.0, 2.5, 3.0, 3.4]))
    deadlines = [float(rng.uniform(work + 0.5, 7.5)), 7.5]
    got = optimal_costs(avail, cost, od, 1, work, q, deadlines)
    for dl, value in zip(deadlines, got):
        want = brute_force(avail[:, 1:], cost[:, 1:], od, TickJob(work, dl, q))
        assert value == pytest.approx(want, abs=1e-9), (dl, value, want)


def test_optimum_prefers_cheap_spot_and_falls_back_to_on_demand():
    avail = np.array([[True] * 10])
    cheap = np.full((1, 10), 0.1)
    assert optimal_costs(avail, cheap, 1.0, 0, 3.0, 1, [8.0])[0] == pytest.approx(0.4)
    never = np.zeros((1, 10), dtype=bool)
    assert optimal_costs(never, cheap, 1.0, 0, 3.0, 1, [8.0])[0] == pytest.approx(4.0)
    assert optimal_costs(never, cheap, 1.0, 0, 3.0, 1, [3.5])[0] == math.inf


def replay_cost(avail: np.ndarray, cost: np.ndarray, od: float, job: TickJob, instance, changeover) -> float:
    """Cost of a schedule by the simulator's rules; fails if it breaks one of them."""
    n_spot, q = avail.shape[0], job.changeover_ticks
    total, trained, prev = 0.0, 0, -1
    for k, (i, co) in enumerate(zip(instance, changeover)):
        if i < 0:
            assert not co
            prev = -1
            continue
        assert i == n_spot or avail[i, k], f"pays for zone {i} while it is down at tick {k}"
        if co:
            run_start = k if (k == 0 or instance[k - 1] != i or not changeover[k - 1]) else None
            if run_start is not None:
                assert all(changeover[k:k + q]) and all(instance[k:k + q] == i), "a changeover of q ticks"
        else:
            assert q == 0 or (prev == i), f"training at tick {k} on {i} without a changeover there"
        price = od if i == n_spot else float(cost[i, k])
        trained += not co
        total += (job.last_fraction if not co and trained == job.work_steps else 1.0) * price
        prev = i
    assert trained == job.work_steps and job.finishes_in_time(len(instance) - 1)
    return total


@pytest.mark.parametrize("seed", range(60))
def test_optimal_schedule_replays_at_the_optimal_cost(seed):
    rng = np.random.default_rng(1000 + seed)
    n_spot = int(rng.integers(1, 4))
    avail = rng.random((n_spot, 40)) < rng.uniform(0.3, 0.9)
    cost = rng.uniform(0.2, 1.0, (n_spot, 40)).round(2)
    q = int(rng.integers(0, 3))
    job = TickJob(float(rng.choice([6.0, 8.5, 12.0])), 25.0, q)
    want = optimal_costs(avail, cost, 1.5, 2, job.work_ticks, q, [job.deadline_ticks])[0]
    schedule = optimal_schedule(avail, cost, 1.5, 2, job)
    assert schedule.cost_usd == pytest.approx(want, abs=1e-9)
    got = replay_cost(avail[:, 2:], cost[:, 2:], 1.5, job, schedule.instance, schedule.changeover)
    assert got == pytest.approx(want, abs=1e-9)


def test_optimal_schedule_waits_for_spot_when_the_deadline_allows():
    avail = np.array([[False] * 5 + [True] * 20])
    cheap = np.full((1, 25), 0.1)
    schedule = optimal_schedule(avail, cheap, 1.0, 0, TickJob(3.0, 20.0, 1))
    assert list(schedule.instance) == [-1] * 5 + [0] * 4
    assert list(schedule.changeover) == [False] * 5 + [True] + [False] * 3
    assert schedule.cost_usd == pytest.approx(0.4)
    with pytest.raises(ValueError, match="no schedule"):
        optimal_schedule(np.zeros((1, 25), dtype=bool), cheap, 1.0, 0, TickJob(3.0, 3.5, 1))
