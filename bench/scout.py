"""Scout benchmark: 17 regions x every GPU instance type against a moto server with 50 ms injected
per AWS call; sequential vs parallel regions in the same run, then a warm (cached) scout task.

    .venv/bin/python bench/scout.py [--latency-ms 50] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

from deployments.local_aws import client, moto_server_process  # noqa: E402
from spotshift.catalog import KNOWN_REGIONS  # noqa: E402
from spotshift.market.aws import AwsMarket  # noqa: E402
from spotshift.market.query import OfferQuery  # noqa: E402
from spotshift.market.retry import RetryPolicy  # noqa: E402

REGIONS = tuple(r for r in KNOWN_REGIONS if r != "mx-central-1")[:17]


def latency_clients(endpoint: str, latency_s: float) -> dict[str, object]:
    """One EC2 client per region whose every HTTP request first sleeps `latency_s`."""
    clients = {}
    for region in REGIONS:
        c = client("ec2", endpoint, region)
        c.meta.events.register("before-send", lambda **kw: time.sleep(latency_s))
        clients[region] = c
    return clients


def cold_scout(clients: dict, query: OfferQuery, workers: int) -> tuple[float, int, int]:
    """Wall seconds of one scout with a fresh market (no type cache), offers, calls made."""
    market = AwsMarket(lambda service, region: clients[region], max_workers=workers,
                       retry=RetryPolicy(), placement_scores=False)
    started = time.perf_counter()
    snap = market.snapshot(query, datetime.now(UTC))
    elapsed = time.perf_counter() - started
    if snap.failed_regions:
        raise SystemExit(f"regions failed: {snap.failed_regions}")
    return elapsed, len(snap.offers), len({o.instance_type for o in snap.offers})


def warm_scout(clients: dict, query: OfferQuery, repeats: int = 5) -> float:
    """Median wall seconds of the Prefect scout task when its cached result is reused (inside a flow)."""
    from prefect import flow

    from tasks.scout import scout

    market = AwsMarket(lambda service, region: clients[region], placement_scores=False,
                       cache_token=f"bench-{os.getpid()}")

    @flow(name="bench-scout")
    def run() -> list[float]:
        now = datetime.now(UTC)
        scout(market, query, now)  # cold: fills the cache
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            scout(market, query, now)
            times.append(time.perf_counter() - started)
        return times

    times = sorted(run())
    return times[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--no-warm", action="store_true", help="skip the Prefect warm-cache measurement")
    args = parser.parse_args()
    query = OfferQuery(regions=REGIONS)
    with moto_server_process() as endpoint:  # its own process, like a remote endpoint
        clients = latency_clients(endpoint, args.latency_ms / 1000)
        cold_scout(clients, query, workers=len(REGIONS))  # moto builds each region's data once: not timed
        sequential_s, offers, types = cold_scout(clients, query, workers=1)
        parallel_s, offers_p, _ = cold_scout(clients, query, workers=len(REGIONS))
        assert offers == offers_p, "sequential and parallel scouts must see the same offers"
        warm_s = None if args.no_warm else warm_scout(clients, query)
    figures = {"regions": len(REGIONS), "instance_types": types, "offers": offers, "latency_ms": args.latency_ms,
               "sequential_s": round(sequential_s, 3), "parallel_s": round(parallel_s, 3),
               "speedup": round(sequential_s / parallel_s, 1),
               "warm_s": None if warm_s is None else round(warm_s, 4)}
    print(f"scout over {len(REGIONS)} regions x {types} GPU instance types ({offers} offers), "
          f"{args.latency_ms:.0f} ms per AWS call")
    print(f"  baseline sequential regions: {sequential_s:.3f} s")
    print(f"  parallel regions:            {parallel_s:.3f} s  ({sequential_s / parallel_s:.1f}x faster; target >= 5x)")
    if warm_s is not None:
        print(f"  warm cached scout task:      {warm_s * 1000:.1f} ms (target < 50 ms)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
