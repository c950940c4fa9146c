"""Scout benchmark: 17 regions x every GPU instance type against a moto server with 50 ms injected
per AWS call; sequential (one call at a time) vs parallel in the same run, then a warm (cached) scout task.

    .venv/bin/python bench/scout.py [--latency-ms 50] [--repeats 3] [--json OUT]

Besides wall times it prints where the time goes (AWS calls per scout, CPU seconds of the moto server
and of this client process) and, for comparison, the same scouts against moto's recorded answers
replayed with the same latency and no server CPU: an endpoint that costs only its latency, as AWS's does.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

from botocore.awsrequest import AWSResponse  # noqa: E402
from botocore.httpsession import URLLib3Session  # noqa: E402

from deployments.local_aws import client, moto_server_process  # noqa: E402
from spotshift.catalog import KNOWN_REGIONS  # noqa: E402
from spotshift.market.aws import AwsMarket  # noqa: E402
from spotshift.market.query import OfferQuery  # noqa: E402

REGIONS = tuple(r for r in KNOWN_REGIONS if r != "mx-central-1")[:17]


class CallCounter:
    """AWS calls answered, over every client it is attached to."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, **kwargs) -> None:
        with self._lock:
            self.count += 1


def latency_clients(endpoint: str, latency_s: float, counter: CallCounter) -> dict[str, object]:
    """One EC2 client per region whose every HTTP request first sleeps `latency_s`."""
    clients = {}
    for region in REGIONS:
        c = client("ec2", endpoint, region)
        c.meta.events.register("before-send", lambda **kw: time.sleep(latency_s))
        c.meta.events.register("after-call.ec2", counter)
        clients[region] = c
    return clients


class _Body:
    """The raw body botocore reads from an AWSResponse."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **kwargs):
        return iter([self._body])


class RecordedEc2:
    """moto's EC2 answers, recorded once and replayed without moto: a server whose only cost is its
    latency. DescribeInstanceTypes is answered per type, so any subset of recorded types can be asked."""

    ITEM = re.compile(rb"(?=<item><instanceType>)")
    NAME = re.compile(rb"<item><instanceType>([^<]+)</instanceType>")

    def __init__(self) -> None:
        self.bodies: dict[tuple, tuple[bytes, dict]] = {}
        self.type_items: dict[str, bytes] = {}
        self.types_frame: tuple[bytes, bytes, dict] | None = None
        self._session = URLLib3Session()

    @staticmethod
    def _key(region: str, request) -> tuple[str, tuple, list[str]]:
        body = request.body.decode() if isinstance(request.body, bytes) else request.body or ""
        params = [(k, v) for k, v in parse_qsl(body) if k != "StartTime"]  # `now` changes, the answer does not
        action = dict(params).get("Action", "")
        names = [v for k, v in params if k.startswith("InstanceType.")]
        return action, (region, tuple(sorted(params))), names

    def record(self, region: str, request, **kwargs) -> AWSResponse:
        """before-send handler: ask moto, keep its answer."""
        response = self._session.send(request)
        action, key, _ = self._key(region, request)
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        if response.status_code == 200 and action == "DescribeInstanceTypes":
            head, _, rest = response.content.partition(b"<instanceTypeSet>")
            items, _, tail = rest.partition(b"</instanceTypeSet>")
            self.types_frame = (head + b"<instanceTypeSet>", b"</instanceTypeSet>" + tail, headers)
            for item in filter(None, self.ITEM.split(items)):
                self.type_items[self.NAME.match(item).group(1).decode()] = item
        elif response.status_code == 200:
            self.bodies[key] = (response.content, headers)
        return response

    def replay(self, region: str, request, **kwargs) -> AWSResponse:
        """before-send handler: the recorded answer (KeyError if it was never recorded)."""
        action, key, names = self._key(region, request)
        if action == "DescribeInstanceTypes":
            head, tail, headers = self.types_frame
            body = head + b"".join(self.type_items[n] for n in names) + tail
        else:
            body, headers = self.bodies[key]
        return AWSResponse(request.url, 200, headers, _Body(body))

    def attach(self, clients: dict[str, object], handler: str) -> dict[str, object]:
        for region, c in clients.items():
            c.meta.events.register_last("before-send", functools.partial(getattr(self, handler), region))
        return clients


def moto_pid() -> int | None:
    """This process's moto server child, from /proc (None where /proc is not there)."""
    for children in Path("/proc/self/task").glob("*/children"):
        for pid in children.read_text().split():
            if b"moto.server" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
    return None


def process_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process (0 without /proc)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ScoutRun:
    wall_s: float
    offers: tuple
    types: int
    calls: int
    client_cpu_s: float
    server_cpu_s: float


def cold_scout(clients: dict, query: OfferQuery, workers: int, counter: CallCounter, server: int | None) -> ScoutRun:
    """One scout with a fresh market (no type cache), at most `workers` AWS calls at a time."""
    market = AwsMarket(lambda service, region: clients[region], max_workers=workers,
                       placement_scores=False)
    calls, client_cpu, server_cpu = counter.count, time.process_time(), process_cpu_s(server)
    started = time.perf_counter()
    snap = market.snapshot(query, datetime.now(UTC))
    elapsed = time.perf_counter() - started
    if snap.failed_regions:
        raise SystemExit(f"regions failed: {snap.failed_regions}")
    offers = tuple(sorted((o.instance_type, o.zone, str(o.market), o.usd_per_hour) for o in snap.offers))
    return ScoutRun(elapsed, offers, len({o.instance_type for o in snap.offers}), counter.count - calls,
                    time.process_time() - client_cpu, process_cpu_s(server) - server_cpu)


def sequential_vs_parallel(clients: dict, query: OfferQuery, repeats: int, counter: CallCounter,
                           server: int | None) -> tuple[list[ScoutRun], list[ScoutRun]]:
    """`repeats` alternating pairs of cold scouts: one call at a time, then one worker per region."""
    sequential, parallel = [], []
    for _ in range(repeats):
        sequential.append(cold_scout(clients, query, 1, counter, server))
        parallel.append(cold_scout(clients, query, len(REGIONS), counter, server))
        assert sequential[-1].offers == parallel[-1].offers, "sequential and parallel scouts must see the same offers"
    return sequential, parallel


def median(runs: list[ScoutRun], field: str) -> float:
    return statistics.median(getattr(r, field) for r in runs)


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
    parser.add_argument("--repeats", type=int, default=3, help="sequential/parallel pairs; medians are reported")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--no-warm", action="store_true", help="skip the Prefect warm-cache measurement")
    args = parser.parse_args()
    query = OfferQuery(regions=REGIONS)
    latency_s = args.latency_ms / 1000
    counter = CallCounter()
    recorded = RecordedEc2()
    with moto_server_process() as endpoint:  # its own process, like a remote endpoint
        server = moto_pid()
        clients = latency_clients(endpoint, latency_s, counter)
        recording = recorded.attach(latency_clients(endpoint, 0.0, counter), "record")
        for workers in (len(REGIONS), 1):  # moto builds each region's data once; the answers are recorded: not timed
            cold_scout(recording, query, workers, counter, None)
        sequential, parallel = sequential_vs_parallel(clients, query, args.repeats, counter, server)
        warm_s = None if args.no_warm else warm_scout(clients, query)
    replayed = recorded.attach(latency_clients("http://127.0.0.1:9", latency_s, counter), "replay")  # no server
    replay_seq, replay_par = sequential_vs_parallel(replayed, query, args.repeats, counter, None)
    assert replay_seq[0].offers == sequential[0].offers, "the replayed answers must give the same offers"

    sequential_s, parallel_s = median(sequential, "wall_s"), median(parallel, "wall_s")
    server_cpu_s, client_cpu_s = median(parallel, "server_cpu_s"), median(parallel, "client_cpu_s")
    calls = sequential[0].calls
    cores = os.cpu_count() or 1
    # parallel can go no faster than the moto server's single Python process, nor than both processes' CPU on all cores
    floor_s = max(server_cpu_s, (server_cpu_s + client_cpu_s) / cores)
    replay_seq_s, replay_par_s = median(replay_seq, "wall_s"), median(replay_par, "wall_s")
    figures = {
        "regions": len(REGIONS), "instance_types": sequential[0].types, "offers": len(sequential[0].offers),
        "latency_ms": args.latency_ms, "repeats": args.repeats, "aws_calls_per_scout": calls,
        "sequential_s": round(sequential_s, 3), "parallel_s": round(parallel_s, 3),
        "speedup": round(sequential_s / parallel_s, 2),
        "warm_s": None if warm_s is None else round(warm_s, 4),
        "parallel_cpu": {"moto_server_s": round(server_cpu_s, 3), "client_s": round(client_cpu_s, 3),
                         "moto_server_sequential_s": round(median(sequential, "server_cpu_s"), 3),
                         "cores": cores, "floor_s": round(floor_s, 3),
                         "best_possible_speedup": round(sequential_s / floor_s, 2)},
        "latency_bound_endpoint": {"sequential_s": round(replay_seq_s, 3), "parallel_s": round(replay_par_s, 3),
                                   "speedup": round(replay_seq_s / replay_par_s, 2),
                                   "client_cpu_s": round(median(replay_par, "client_cpu_s"), 3)},
    }
    print(f"scout over {len(REGIONS)} regions x {figures['instance_types']} GPU instance types "
          f"({figures['offers']} offers, {calls} AWS calls), {args.latency_ms:.0f} ms per AWS call, "
          f"median of {args.repeats}")
    print("moto server (one process):")
    print(f"  baseline, one call at a time: {sequential_s:.3f} s")
    print(f"  parallel:                     {parallel_s:.3f} s  "
          f"({sequential_s / parallel_s:.1f}x faster; target >= 5x)")
    print(f"  CPU per parallel scout: moto server {server_cpu_s:.3f} s (sequential: "
          f"{median(sequential, 'server_cpu_s'):.3f} s), client {client_cpu_s:.3f} s, {cores} cores")
    print(f"  -> parallel cannot beat {floor_s:.3f} s here ({sequential_s / floor_s:.1f}x at best): "
          f"one moto process runs on one core at a time")
    print("moto's answers replayed, no server CPU (latency-bound, like AWS):")
    print(f"  baseline, one call at a time: {replay_seq_s:.3f} s")
    print(f"  parallel:                     {replay_par_s:.3f} s  ({replay_seq_s / replay_par_s:.1f}x faster)")
    if warm_s is not None:
        print(f"warm cached scout task:         {warm_s * 1000:.1f} ms (target < 50 ms)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
