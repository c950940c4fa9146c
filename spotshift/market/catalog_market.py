"""The embedded market for estimates offline: on-demand offers of every catalog instance type in
the query's regions at the dated list prices (spotshift.market.on_demand_fallback). No spot:
offline there is no spot price to tell, only the live market or a trace replay has one."""

from __future__ import annotations

from datetime import datetime

from spotshift.market.on_demand_fallback import FALLBACK_SOURCE, fallback_price
from spotshift.market.query import OfferQuery
from spotshift.cost_model import rank_offers
from spotshift.models import Market, MarketSnapshot, Offer


class CatalogMarket:
    """MarketSource over the dated on-demand table. An on-demand price does not differ by zone:
    each offer's zone is the region's name, EC2 picks the zone at launch."""

    cache_token = FALLBACK_SOURCE

    def snapshot(self, query: OfferQuery, now: datetime) -> MarketSnapshot:
        offers = []
        if Market.ON_DEMAND in query.markets:
            for region in query.regions:
                for t in query.instance_types_wanted():
                    usd = fallback_price(region, t.name)
                    if usd is not None:
                        offers.append(Offer(
                            instance_type=t.name, gpu=t.gpu, gpu_count=t.gpu_count, gpu_memory_gib=t.gpu_memory_gib,
                            vcpus=t.vcpus, memory_gib=t.memory_gib, region=region, zone=region,
                            market=Market.ON_DEMAND, usd_per_hour=usd, observed_at=now, source=FALLBACK_SOURCE))
        return MarketSnapshot(taken_at=now, offers=rank_offers(offers), source=FALLBACK_SOURCE)
