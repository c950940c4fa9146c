"""The one cost model: dollars per unit of training work (V100-hours), and the ranking of offers by it,
cheapest first. The optimizer, the policy, the scout, the markets and the simulator all price work here.

An offer pays its whole $/h; the work counts only the GPUs the job uses. `rates` (instance type ->
V100-hours per hour, from spotshift.sizing.work_rates for one job) makes the ranking the job's: its
precision, GPUs used and method; without it, every GPU of the instance in mixed precision."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from spotshift.models import Offer, OfferKey
from spotshift.sizing.speed import instance_work_units_per_hour

WorkRates = Mapping[str, float]  # instance type -> V100-hours of work per hour


def work_rate(offer: Offer, rates: WorkRates | None = None) -> float:
    """V100-hours per hour of this offer (0 where `rates` says the job does not fit it)."""
    if rates is None:
        return instance_work_units_per_hour(offer.instance_type)
    return rates.get(offer.instance_type, 0.0)


def usd_per_work_unit(offer: Offer, rates: WorkRates | None = None) -> float:
    """What one V100-hour of training costs on this offer: the whole $/h over the work of the GPUs used."""
    rate = work_rate(offer, rates)
    return offer.usd_per_hour / rate if rate > 0 else float("inf")


def rank_key(offer: Offer, rates: WorkRates | None = None) -> tuple[float, float, float, OfferKey]:
    """Cheapest work unit first; ties: lower (or known) interruption risk, lower $/h, then the key."""
    risk = offer.interruption.probability
    return (usd_per_work_unit(offer, rates), 1.0 if risk is None else risk, offer.usd_per_hour, offer.key)


def rank_offers(offers: Iterable[Offer], rates: WorkRates | None = None) -> list[Offer]:
    """The offers sorted cheapest dollars-per-work-unit first (deterministic)."""
    return sorted(offers, key=lambda o: rank_key(o, rates))
