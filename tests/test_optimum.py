"""The offline optimum equals an exhaustive search of every schedule on small random traces."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spotshift.sim.grid import TickJob
from spotshift.sim.optimum import optimal_costs


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
