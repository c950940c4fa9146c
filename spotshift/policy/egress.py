"""What it costs to carry a checkpoint from one region to another (shipped AWS transfer prices)."""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path

EGRESS_TABLE = Path(__file__).with_name("egress_prices.csv")
# AWS's list price for inter-region transfer between regions missing from the table.
DEFAULT_USD_PER_GB = 0.02


@cache
def egress_prices() -> dict[tuple[str, str], float]:
    """(from_region, to_region) -> USD per GB."""
    lines = [ln for ln in EGRESS_TABLE.read_text().splitlines() if ln and not ln.startswith("#")]
    return {(r["from_region"], r["to_region"]): float(r["usd_per_gb"]) for r in csv.DictReader(lines)}


def transfer_cost_usd(from_region: str | None, to_region: str, checkpoint_gb: float) -> float:
    """Cost of moving a checkpoint of `checkpoint_gb` between regions (0 within a region)."""
    if from_region is None or from_region == to_region or checkpoint_gb <= 0:
        return 0.0
    return checkpoint_gb * egress_prices().get((from_region, to_region), DEFAULT_USD_PER_GB)
