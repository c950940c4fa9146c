"""Dated on-demand Linux prices ($/h, shared tenancy) used when the Pricing API is unreachable.

us-east-1 list prices from the AWS EC2 on-demand pricing page as of FALLBACK_AS_OF (p5 after the
June 2025 price cut); other regions scale them by a typical regional uplift (an approximation:
the Pricing API is the source of truth, this table only keeps a scout useful offline).
"""

from __future__ import annotations

from datetime import date

FALLBACK_AS_OF = date(2025, 7, 1)
FALLBACK_SOURCE = f"fallback-table:{FALLBACK_AS_OF.isoformat()}"

US_EAST_1_USD_PER_HOUR: dict[str, float] = {
    "g4dn.xlarge": 0.526, "g4dn.2xlarge": 0.752, "g4dn.4xlarge": 1.204, "g4dn.8xlarge": 2.176,
    "g4dn.12xlarge": 3.912, "g4dn.16xlarge": 4.352, "g4dn.metal": 7.824,
    "g5.xlarge": 1.006, "g5.2xlarge": 1.212, "g5.4xlarge": 1.624, "g5.8xlarge": 2.448,
    "g5.12xlarge": 5.672, "g5.16xlarge": 4.096, "g5.24xlarge": 8.144, "g5.48xlarge": 16.288,
    "g6.xlarge": 0.8048, "g6.2xlarge": 0.9776, "g6.4xlarge": 1.3232, "g6.8xlarge": 2.0144,
    "g6.12xlarge": 4.6016, "g6.16xlarge": 3.3968, "g6.24xlarge": 6.6752, "g6.48xlarge": 13.3504,
    "g6e.xlarge": 1.861, "g6e.2xlarge": 2.242, "g6e.4xlarge": 3.004, "g6e.8xlarge": 4.529,
    "g6e.12xlarge": 10.493, "g6e.16xlarge": 7.577, "g6e.24xlarge": 15.066, "g6e.48xlarge": 30.131,
    "p3.2xlarge": 3.06, "p3.8xlarge": 12.24, "p3.16xlarge": 24.48, "p3dn.24xlarge": 31.212,
    "p4d.24xlarge": 32.7726, "p4de.24xlarge": 40.9657,
    "p5.4xlarge": 6.88, "p5.48xlarge": 55.04, "p5e.48xlarge": 60.0, "p5en.48xlarge": 63.296,
}

# Typical on-demand uplift of a region over us-east-1 for GPU instances (rounded).
REGION_FACTOR: dict[str, float] = {
    "us-east-1": 1.0, "us-east-2": 1.0, "us-west-2": 1.0, "us-west-1": 1.17,
    "ca-central-1": 1.1, "ca-west-1": 1.1, "mx-central-1": 1.15, "sa-east-1": 1.6,
    "eu-west-1": 1.1, "eu-west-2": 1.17, "eu-west-3": 1.17, "eu-central-1": 1.2, "eu-central-2": 1.3,
    "eu-north-1": 1.05, "eu-south-1": 1.17, "eu-south-2": 1.17,
    "ap-south-1": 1.1, "ap-south-2": 1.1, "ap-northeast-1": 1.3, "ap-northeast-2": 1.25,
    "ap-northeast-3": 1.3, "ap-southeast-1": 1.3, "ap-southeast-2": 1.3, "ap-southeast-3": 1.3,
    "ap-southeast-4": 1.3, "ap-southeast-5": 1.2, "ap-east-1": 1.4, "me-south-1": 1.3,
    "me-central-1": 1.3, "il-central-1": 1.2, "af-south-1": 1.35,
}


def fallback_price(region: str, instance_type: str) -> float | None:
    """The dated table's on-demand $/h, or None when the type is not in it."""
    base = US_EAST_1_USD_PER_HOUR.get(instance_type)
    return None if base is None else round(base * REGION_FACTOR.get(region, 1.3), 4)
