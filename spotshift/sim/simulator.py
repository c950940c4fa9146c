"""Replay a job through a registered policy tick by tick: per-second billing, a changeover on
every new instance (paid, no progress), spot lost when its zone's capacity goes, and the checkpoint's
transfer paid on every launch in another region."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

from spotshift.lifecycle.state import JobFacts, Stint, job_state
from spotshift.models import EndReason, Market
from spotshift.policy.egress import transfer_cost_usd
from spotshift.policy.policies import Policy
from spotshift.policy.state import Move, Stop
from spotshift.sim.grid import TickJob
from spotshift.sim.market import TraceMarket

OD = -1  # instance index of on-demand (spot instances are zone indices)


@dataclass(frozen=True)
class RunResult:
    cost_usd: float
    finished: bool
    on_time: bool
    changeovers: int
    preemptions: int
    end_tick: int  # ticks from the start
    ticks_on_demand: int = 0  # training ticks on on-demand
    ticks_on_spot: int = 0  # training ticks on spot
    ticks_changeover: int = 0  # paid changeover ticks (any market)
    egress_usd: float = 0.0  # checkpoint transfers between regions (included in cost_usd)
    cross_region_moves: int = 0  # launches in another region than the one before


def simulate(
    policy: Policy,
    market: TraceMarket,
    start: int,
    job: TickJob,
    home_zone: str | None = None,
    every_tick: bool = False,
    checkpoint_gb: float = 0.0,
    checkpoint_region: str | None = None,
) -> RunResult:
    """Run one job from trace tick `start`. The policy is asked at every tick where its last Stay
    stops holding, the market changes, a changeover ends or capacity is lost (`every_tick`: always).
    A launch in another region than the last one pays for carrying `checkpoint_gb` there.
    `checkpoint_region`: where the checkpoints are kept (the job's bucket, as in the flows): the
    policy is told so and a relaunch elsewhere carries them from there; None = they follow the
    instance (the region of the last launch)."""
    tick_h = market.tick_hours
    avail, usd = market.available, market.usd_per_tick
    n_ticks = avail.shape[1]
    steps, frac = job.work_steps, job.last_fraction
    deadline_at = market.time_of(start) + timedelta(hours=job.deadline_ticks * tick_h)
    facts = JobFacts(job_id="sim", deadline=deadline_at, started_at=market.time_of(start),
                     remaining_work=job.work_ticks * tick_h, changeover_hours=job.changeover_ticks * tick_h,
                     total_work=job.work_ticks * tick_h, checkpoint_gb=checkpoint_gb, home_zone=home_zone)
    stints: list[Stint] = []  # the placements so far, as the flows' ledger holds them
    zone_index = {z: i for i, z in enumerate(market.traces.zones)}
    cost = egress = 0.0
    done = 0  # whole work ticks done
    inst: int | None = None
    co_left = 0
    changeovers = preemptions = cross_region = 0
    kinds = {"od": 0, "spot": 0, "changeover": 0}  # ticks billed, by what they bought
    last_region = None
    next_ask = start
    limit = min(n_ticks, start + job.horizon)
    t = start
    while t < limit:
        if inst is not None and inst != OD and not avail[inst, t]:
            inst, next_ask = None, t
            preemptions += 1
            stints[-1] = replace(stints[-1], ended_at=market.time_of(t), end_reason=EndReason.PREEMPTED)
        if every_tick or t >= next_ask:
            now = market.time_of(t)
            if stints and stints[-1].ended_at is None and not co_left:
                stints[-1] = replace(stints[-1], trained=True)  # its changeover is over
            state = job_state(replace(facts, remaining_work=(job.work_ticks - done) * tick_h,
                                      checkpoint_region=checkpoint_region or last_region,
                                      outlook=market.outlook(t)), stints)
            decision = policy.decide(state, market.snapshot(t), now)
            next_ask = t + 1
            if isinstance(decision, Stop):
                break
            if isinstance(decision, Move):
                target = decision.target
                idx = OD if target.market is Market.ON_DEMAND else zone_index.get(target.zone)
                if idx is not None and (idx == OD or avail[idx, t]):
                    if stints and stints[-1].ended_at is None:
                        stints[-1] = replace(stints[-1], ended_at=now, end_reason=EndReason.MIGRATED)
                    stints.append(Stint(target, now, trained=False))
                    inst, co_left = idx, job.changeover_ticks
                    # no checkpoint before the first run; after it, where checkpoints are kept
                    kept = (checkpoint_region or last_region) if last_region is not None else None
                    carry = transfer_cost_usd(kept, target.region, checkpoint_gb)
                    cost, egress = cost + carry, egress + carry
                    cross_region += last_region is not None and last_region != target.region
                    last_region = target.region
                    changeovers += 1
            elif decision.until is not None:
                next_ask = max(t + 1, start + int(-(-((decision.until - market.time_of(start)).total_seconds())
                                                     // market.traces.tick_seconds)))
            next_ask = min(next_ask, market.next_change(t))
        if inst is None:
            t = min(next_ask, limit) if not every_tick else t + 1
            continue
        price = market.od_usd_per_tick if inst == OD else usd[inst, t]
        if co_left:
            cost += price
            co_left -= 1
            kinds["changeover"] += 1
            t += 1
            continue
        if done == steps - 1:
            cost += frac * price
            done += 1
            kinds["od" if inst == OD else "spot"] += 1
            k = t - start
            return RunResult(cost, True, job.finishes_in_time(k), changeovers, preemptions, k + 1,
                             kinds["od"], kinds["spot"], kinds["changeover"], egress, cross_region)
        # train until the next event in one stride
        stride = 1 if every_tick else max(1, min(next_ask, limit, t + steps - 1 - done) - t)
        if inst == OD:
            cost += price * stride
        else:
            cost += float(usd[inst, t:t + stride].sum())
        done += stride
        kinds["od" if inst == OD else "spot"] += stride
        t += stride
    return RunResult(cost, False, False, changeovers, preemptions, t - start,
                     kinds["od"], kinds["spot"], kinds["changeover"], egress, cross_region)
