"""On-demand prices from the AWS Pricing API (get_products), or the dated fallback table."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from botocore.exceptions import BotoCoreError

from spotshift.aws.errors import SpotshiftAwsError
from spotshift.market.on_demand_fallback import FALLBACK_SOURCE, fallback_price
from spotshift.aws.calls import paginate_aws

PRICING_SOURCE = "pricing:get_products"
log = logging.getLogger(__name__)


def price_filters(region: str) -> list[dict[str, str]]:
    """Linux, shared tenancy, no pre-installed software, GPU instances in one region."""
    return [
        {"Type": "TERM_MATCH", "Field": field, "Value": value}
        for field, value in (
            ("regionCode", region), ("instanceFamily", "GPU instance"), ("operatingSystem", "Linux"),
            ("tenancy", "Shared"), ("preInstalledSw", "NA"), ("capacitystatus", "Used"),
        )
    ]


def parse_price_list(price_list: Iterable[str]) -> dict[str, float]:
    """instance type -> on-demand USD per hour, from get_products' PriceList (JSON strings)."""
    prices: dict[str, float] = {}
    for item in price_list:
        product = json.loads(item) if isinstance(item, str) else item
        instance_type = product.get("product", {}).get("attributes", {}).get("instanceType")
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dim in term.get("priceDimensions", {}).values():
                usd = float(dim.get("pricePerUnit", {}).get("USD", 0) or 0)
                if instance_type and dim.get("unit") in ("Hrs", "Hours") and usd > 0:
                    prices[instance_type] = usd
    return prices


class OnDemandPrices:
    """Per-region on-demand prices: the Pricing API when it answers, else the dated table."""

    def __init__(self, pricing_client: Any | None) -> None:
        self.pricing = pricing_client

    def prices(self, region: str, instance_types: Iterable[str]) -> dict[str, tuple[float, str]]:
        """instance type -> ($/h, source): the API's price, else the dated table's (source says which)."""
        api: dict[str, float] = {}
        if self.pricing is not None:
            try:
                pages = paginate_aws(self.pricing, "get_products", region=region,
                                     ServiceCode="AmazonEC2", Filters=price_filters(region), FormatVersion="aws_v1")
                api = parse_price_list(p for page in pages for p in page.get("PriceList", []))
            except (SpotshiftAwsError, BotoCoreError) as exc:
                log.warning("on-demand prices for %s fall back to %s: pricing API failed: %s", region, FALLBACK_SOURCE, exc)
        else:
            log.info("on-demand prices for %s from %s: no pricing client", region, FALLBACK_SOURCE)
        out: dict[str, tuple[float, str]] = {}
        for t in instance_types:
            if t in api:
                out[t] = (api[t], PRICING_SOURCE)
            elif (price := fallback_price(region, t)) is not None:
                out[t] = (price, FALLBACK_SOURCE)
        return out
