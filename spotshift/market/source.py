"""The interface every market implements (live AWS, trace replay) and the scout depends on."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from spotshift.market.query import OfferQuery
from spotshift.models import MarketSnapshot


@runtime_checkable
@runtime_checkable
class MarketSource(Protocol):
    """Answers "what can I run where, at what price, now"."""

    @property
    def cache_token(self) -> str:
        """Identifies the market's data (endpoint, trace, clock) so cached snapshots never cross markets."""
        ...

    def snapshot(self, query: OfferQuery, now: datetime) -> MarketSnapshot:
        """Every offer that fits `query` at `now`, ranked by spotshift.cost_model.rank_offers."""
        ...
