"""What every policy computes from a JobState and a snapshot: offers by kind, hours left, slack."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from spotshift.cost_model import WorkRates, rank_offers, usd_per_work_unit, work_rate
from spotshift.models import OfferKey, Market, MarketSnapshot, Offer
from spotshift.policy.egress import transfer_cost_usd
from spotshift.policy.state import JobState

HOUR = timedelta(hours=1)


def hours_to_finish(state: JobState, offer: Offer) -> float:
    """Training hours `offer` needs for the job's remaining work."""
    return state.remaining_work / work_rate(offer, state.work_rates)


def changeover_left(state: JobState, now: datetime) -> float:
    """Hours of changeover the current instance still has before it trains."""
    if state.current is None or state.ready_at is None:
        return 0.0
    return max(0.0, (state.ready_at - now) / HOUR)


def move_cost_usd(state: JobState, target: Offer) -> float:
    """Dollars a move to `target` costs before it trains: the changeover and the checkpoint transfer."""
    return state.changeover_hours * target.usd_per_hour + transfer_cost_usd(
        state.checkpoint_region, target.region, state.checkpoint_gb
    )


def expected_saving_usd(state: JobState, baseline: Offer | None, target: Offer) -> float:
    """Dollars going to `target` is expected to save against `baseline` (the job's current offer;
    idle, the best on-demand offer, what finishing without spot would cost) for the same work: the
    work `target` is expected to do before its capacity goes (the outlook's run hours for a spot
    zone, else all the work left), priced per work unit by the cost model, net of what getting
    there costs (changeover and checkpoint transfer; idle, only what it costs beyond the baseline's
    own launch). Negative: the move costs more (a deadline move to on-demand). 0 without a baseline."""
    if baseline is None:
        return 0.0
    run = math.inf
    if target.market is Market.SPOT and state.outlook is not None and target.zone in state.outlook.run_hours:
        run = state.outlook.run_hours[target.zone]
    work = min(state.remaining_work, run * work_rate(target, state.work_rates))
    getting_there = move_cost_usd(state, target)
    if state.current is None:
        getting_there -= move_cost_usd(state, baseline)
    return (usd_per_work_unit(baseline, state.work_rates) - usd_per_work_unit(target, state.work_rates)) * work \
        - getting_there


@dataclass(frozen=True)
class View:
    """The snapshot seen from one job: usable offers cheapest-work-first, and the safety-net slack."""

    spot: list[Offer]
    on_demand: list[Offer]
    hours_left: float  # until the deadline
    od_slack: float  # hours to spare if the job went (or stays) on the best on-demand offer now

    @property
    def best_od(self) -> Offer | None:
        return self.on_demand[0] if self.on_demand else None


def make_view(
    state: JobState,
    snapshot: MarketSnapshot,
    now: datetime,
    zone: str | None = None,
    blocked: frozenset[OfferKey] = frozenset(),
) -> View:
    """Rank the snapshot's offers for `state` (only `zone`'s spot and its region's on-demand when
    given) and compute the slack left if the job finished on on-demand."""
    rates = state.work_rates
    if zone is None and not blocked and rates is None:
        spot, on_demand = _ranked_by_market(snapshot.offers)
    else:
        offers = [o for o in snapshot.offers if o.key not in blocked and work_rate(o, rates) > 0]
        if zone is not None:
            region = zone[:-1]
            offers = [o for o in offers if (o.zone == zone if o.market is Market.SPOT else o.region == region)]
        spot, on_demand = _split(rank_offers(offers, rates))
    on_demand = _checkpoint_region_first(state, on_demand)
    hours_left = (state.deadline - now) / HOUR
    if on_demand:
        od = on_demand[0]
        on_it = state.current is not None and state.current.key == od.key
        start = changeover_left(state, now) if on_it else state.changeover_hours
        od_slack = hours_left - hours_to_finish(state, od) - start
    else:
        od_slack = float("-inf")
    return View(spot, on_demand, hours_left, od_slack)


def _checkpoint_region_first(state: JobState, on_demand: list[Offer]) -> list[Offer]:
    """On-demand offers with the checkpoint's region first among those of the cheapest work unit:
    on-demand is never interrupted, so the only difference between equal prices is the transfer."""
    if len(on_demand) < 2 or state.checkpoint_region is None or on_demand[0].region == state.checkpoint_region:
        return on_demand
    cheapest = usd_per_work_unit(on_demand[0], state.work_rates)
    for i, o in enumerate(on_demand):
        if usd_per_work_unit(o, state.work_rates) > cheapest:
            break
        if o.region == state.checkpoint_region:
            return [o, *on_demand[:i], *on_demand[i + 1:]]
    return on_demand


_RANKED: dict[int, tuple[list[Offer], list[Offer], list[Offer]]] = {}
_RANKED_MAX = 4096


def _split(ranked: list[Offer]) -> tuple[list[Offer], list[Offer]]:
    return [o for o in ranked if o.market is Market.SPOT], [o for o in ranked if o.market is Market.ON_DEMAND]


def _ranked_by_market(offers: list[Offer]) -> tuple[list[Offer], list[Offer]]:
    """rank_offers split by market, memoized per offers list (a replay asks about the same snapshot
    for many jobs and policies); the entry holds the list itself, so a hit is that very list."""
    hit = _RANKED.get(id(offers))
    if hit is not None and hit[0] is offers:
        return hit[1], hit[2]
    spot, on_demand = _split(rank_offers(offers))
    if len(_RANKED) >= _RANKED_MAX:
        _RANKED.clear()
    _RANKED[id(offers)] = (offers, spot, on_demand)
    return spot, on_demand


def rate(offer: Offer, rates: WorkRates | None = None) -> float:
    """Dollars per V100-hour of work on `offer` (for the job whose `rates` they are)."""
    return usd_per_work_unit(offer, rates)
