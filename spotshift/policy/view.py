"""What every policy computes from a JobState and a snapshot: offers by kind, hours left, slack."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from spotshift.catalog import work_units_per_hour
from spotshift.market.ranking import rank_offers, usd_per_work_unit
from spotshift.models import Market, MarketSnapshot, Offer
from spotshift.policy.egress import transfer_cost_usd
from spotshift.policy.state import JobState

HOUR = timedelta(hours=1)


def hours_to_finish(state: JobState, offer: Offer) -> float:
    """Training hours `offer` needs for the job's remaining work."""
    return state.remaining_work / work_units_per_hour(offer.instance_type)


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
    blocked: frozenset[tuple[str, str, str, str]] = frozenset(),
) -> View:
    """Rank the snapshot's offers for `state` (only `zone`'s spot and its region's on-demand when
    given) and compute the slack left if the job finished on on-demand."""
    offers = [o for o in snapshot.offers if o.key not in blocked]
    if zone is not None:
        region = zone[:-1]
        offers = [o for o in offers if (o.zone == zone if o.market is Market.SPOT else o.region == region)]
    ranked = rank_offers(offers)
    spot = [o for o in ranked if o.market is Market.SPOT]
    on_demand = [o for o in ranked if o.market is Market.ON_DEMAND]
    hours_left = (state.deadline - now) / HOUR
    if on_demand:
        od = on_demand[0]
        on_it = state.current is not None and state.current.key == od.key
        start = changeover_left(state, now) if on_it else state.changeover_hours
        od_slack = hours_left - hours_to_finish(state, od) - start
    else:
        od_slack = float("-inf")
    return View(spot, on_demand, hours_left, od_slack)


def rate(offer: Offer) -> float:
    """Dollars per V100-hour of work on `offer`."""
    return usd_per_work_unit(offer)
