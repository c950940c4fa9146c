"""The one ranking of offers: dollars per unit of training work (V100-hours), cheapest first."""

from __future__ import annotations

from collections.abc import Iterable

from spotshift.catalog import work_units_per_hour
from spotshift.models import Offer


def usd_per_work_unit(offer: Offer) -> float:
    """What one V100-hour of training costs on this offer."""
    return offer.usd_per_hour / work_units_per_hour(offer.instance_type)


def rank_key(offer: Offer) -> tuple[float, float, float, tuple[str, str, str, str]]:
    """Cheapest work unit first; ties: lower (or known) interruption risk, lower $/h, then the key."""
    risk = offer.interruption.probability
    return (usd_per_work_unit(offer), 1.0 if risk is None else risk, offer.usd_per_hour, offer.key)


def rank_offers(offers: Iterable[Offer]) -> list[Offer]:
    """The offers sorted cheapest dollars-per-work-unit first (deterministic)."""
    return sorted(offers, key=rank_key)
