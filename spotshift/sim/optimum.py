"""The offline optimum: an exact DP over (tick, progress, instance) with the whole future known, and
the schedule that attains it (for comparing a policy's hours with the optimum's)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
    avail, cost = _window(available, usd_per_tick, od_usd_per_tick, start, job)
    finish = _forward(avail, cost, job)
    best_by = np.minimum.accumulate(finish) if job.horizon else finish
    return [float(best_by[j.horizon - 1]) if j.horizon > 0 else np.inf for j in jobs]


def _window(
    available: np.ndarray, usd_per_tick: np.ndarray, od_usd_per_tick: float, start: int, job: TickJob
) -> tuple[np.ndarray, np.ndarray]:
    """Availability and cost per tick from `start` over the job's horizon, on-demand as the last row."""
    n_spot, q = available.shape[0], job.changeover_ticks
    span = job.horizon + q + 1
    avail = np.zeros((n_spot + 1, span), dtype=bool)
    cost = np.zeros((n_spot + 1, span))
    stop = min(available.shape[1], start + span)
    avail[:n_spot, : stop - start] = available[:, start:stop]
    cost[:n_spot, : stop - start] = np.nan_to_num(usd_per_tick[:, start:stop], nan=0.0)
    avail[:n_spot] &= ~np.isnan(np.pad(usd_per_tick[:, start:stop], ((0, 0), (0, span - (stop - start))), constant_values=0))
    avail[n_spot] = True
    cost[n_spot] = od_usd_per_tick
    return avail, cost


def _forward(avail: np.ndarray, cost: np.ndarray, job: TickJob, record: list | None = None) -> np.ndarray:
    """Least cost of finishing at each tick. `record` (if given) receives per tick the training
    states before any loss and the best state to launch or idle from, for `optimal_schedule`."""
    steps, frac, q, horizon = job.work_steps, job.last_fraction, job.changeover_ticks, job.horizon
    launch = launch_costs(avail, cost, q)
    inf = np.inf
    ready = np.full((avail.shape[0], steps), inf)  # training on instance i with progress p
    idle = np.full(steps, inf)
    idle[0] = 0.0
    pending = np.full((q + 1, avail.shape[0], steps), inf)  # launches arriving at a later boundary
    finish = np.full(horizon, inf)
    for k in range(horizon):
        slot = k % (q + 1)
        np.minimum(ready, pending[slot], out=ready)
        pending[slot] = inf
        up = avail[:, k]
        before_loss = ready.copy() if record is not None else None
        if not up.all():
            idle = np.minimum(idle, ready[~up].min(axis=0))
            ready[~up] = inf
        best = np.minimum(idle, ready.min(axis=0))
        if record is not None:
            record.append((before_loss, best.copy()))
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
    return finish


@dataclass(frozen=True)
class OptimalSchedule:
    """The optimum's schedule, per tick from the start to its last work tick: the instance it pays
    for (a zone index, the number of zones for on-demand, -1 when idle) and whether that tick is a
    changeover."""

    cost_usd: float
    instance: np.ndarray
    changeover: np.ndarray


def optimal_schedule(
    available: np.ndarray, usd_per_tick: np.ndarray, od_usd_per_tick: float, start: int, job: TickJob
) -> OptimalSchedule:
    """The least-cost schedule for `job` from tick `start` (arguments as `optimal_costs`), recovered
    by walking the DP back from its best finish. Keeps every tick's states: memory grows as
    horizon x instances x work ticks, so this is for analysing single runs, not for benchmarks."""
    avail, cost = _window(available, usd_per_tick, od_usd_per_tick, start, job)
    record: list = []
    finish = _forward(avail, cost, job, record)
    steps, frac, q = job.work_steps, job.last_fraction, job.changeover_ticks
    if not np.isfinite(finish).any():
        raise ValueError("no schedule finishes the job by its deadline")
    launch = launch_costs(avail, cost, q)
    end = int(np.argmin(finish))
    instance = np.full(end + 1, -1)
    changeover = np.zeros(end + 1, dtype=bool)

    def ready_value(i: int, p: int, k: int) -> float:
        """Cost of training on i at progress p in tick k (after a loss; with q = 0, a free launch)."""
        if not avail[i, k]:
            return np.inf
        v = record[k][0][i, p]
        return min(v, record[k][1][p]) if q == 0 else v

    def close(a: float, b: float) -> bool:
        return abs(a - b) <= 1e-9 * max(1.0, abs(b))

    last = [ready_value(i, steps - 1, end) + frac * cost[i, end] for i in range(avail.shape[0])]
    i, p, k = int(np.argmin(last)), steps - 1, end
    instance[k] = i
    value, from_best = ready_value(i, p, k), q == 0  # in a training state: (i, p) at tick k
    while True:
        if i >= 0:  # training on i with progress p at tick k: trained at k - 1, or launched
            if k > 0 and p > 0 and avail[i, k - 1] and close(ready_value(i, p - 1, k - 1) + cost[i, k - 1], value):
                k, p = k - 1, p - 1
                instance[k] = i
                value, from_best = ready_value(i, p, k), q == 0
                continue
            launched = k - q
            if q == 0:
                assert from_best and close(record[k][1][p], value), (i, p, k)
            else:
                assert launched >= 0 and close(record[launched][1][p] + launch[i, launched], value), (i, p, k)
                instance[launched:k] = i
                changeover[launched:k] = True
            i, k = -1, launched
            value = record[k][1][p]
            continue
        if k == 0 and p == 0:
            break
        # the best state at tick k: an instance's training state (left here or lost here), or idle since k - 1
        states = record[k][0][:, p]
        hit = np.flatnonzero([close(v, value) for v in states])
        if hit.size:
            i = int(hit[0])
            from_best = False
            continue
        assert k > 0 and close(record[k - 1][1][p], value), (p, k)
        k -= 1
    return OptimalSchedule(float(finish[end]), instance, changeover)
