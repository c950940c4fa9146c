"""The offline optimum: an exact DP over (tick, progress, instance) with the whole future known."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spotshift.sim.grid import TickJob


def launch_costs(available: np.ndarray, cost: np.ndarray, q: int) -> np.ndarray:
    """Cost of a changeover of q ticks starting at each tick; inf where the capacity vanishes
    before it ends (a launch that would be lost is never better than waiting)."""
    n = available.shape[1]
    if q == 0:
        return np.where(available, 0.0, np.inf)
    zeros = np.zeros((available.shape[0], 1))
    c_sum = np.concatenate([zeros, np.cumsum(cost, axis=1)], axis=1)
    a_sum = np.concatenate([zeros, np.cumsum(available, axis=1)], axis=1)
    out = np.full(available.shape, np.inf)
    m = n - q + 1
    if m > 0:
        window_cost = c_sum[:, q:q + m] - c_sum[:, :m]
        window_ok = (a_sum[:, q:q + m] - a_sum[:, :m]) == q
        out[:, :m] = np.where(window_ok, window_cost, np.inf)
    return out


def optimal_costs(
    available: np.ndarray,
    usd_per_tick: np.ndarray,
    od_usd_per_tick: float,
    start: int,
    work_ticks: float,
    changeover_ticks: int,
    deadlines: Sequence[float],
) -> list[float]:
    """Least cost to finish `work_ticks` of work starting at tick `start`, for each deadline (in
    ticks from the start); inf where no schedule makes it. Spot rows of `available`/`usd_per_tick`
    are zones (n_zones, n_ticks); on-demand is always available at `od_usd_per_tick`."""
    jobs = [TickJob(work_ticks, dl, changeover_ticks) for dl in deadlines]
    job = max(jobs, key=lambda j: j.horizon)
    steps, frac, q, horizon = job.work_steps, job.last_fraction, changeover_ticks, job.horizon
    n_spot = available.shape[0]
    span = horizon + q + 1
    avail = np.zeros((n_spot + 1, span), dtype=bool)
    cost = np.zeros((n_spot + 1, span))
    stop = min(available.shape[1], start + span)
    avail[:n_spot, : stop - start] = available[:, start:stop]
    cost[:n_spot, : stop - start] = np.nan_to_num(usd_per_tick[:, start:stop], nan=0.0)
    avail[:n_spot] &= ~np.isnan(np.pad(usd_per_tick[:, start:stop], ((0, 0), (0, span - (stop - start))), constant_values=0))
    avail[n_spot] = True
    cost[n_spot] = od_usd_per_tick
    launch = launch_costs(avail, cost, q)

    inf = np.inf
    ready = np.full((n_spot + 1, steps), inf)  # training on instance i with progress p
    idle = np.full(steps, inf)
    idle[0] = 0.0
    pending = np.full((q + 1, n_spot + 1, steps), inf)  # launches arriving at a later boundary
    finish = np.full(horizon, inf)
    for k in range(horizon):
        slot = k % (q + 1)
        np.minimum(ready, pending[slot], out=ready)
        pending[slot] = inf
        up = avail[:, k]
        if not up.all():
            idle = np.minimum(idle, ready[~up].min(axis=0))
            ready[~up] = inf
        best = np.minimum(idle, ready.min(axis=0))
        if q == 0:
            ready[up] = np.minimum(ready[up], best)
        else:
            target = (k + q) % (q + 1)
            np.minimum(pending[target], best[None, :] + launch[:, k][:, None], out=pending[target])
        c = cost[:, k]
        finish[k] = (ready[:, steps - 1] + frac * c).min()
        moved = np.full_like(ready, inf)
        moved[:, 1:] = ready[:, :-1] + c[:, None]
        ready = moved
        idle = best
    best_by = np.minimum.accumulate(finish) if horizon else finish
    out = []
    for j in jobs:
        h = j.horizon
        out.append(float(best_by[h - 1]) if h > 0 else inf)
    return out
