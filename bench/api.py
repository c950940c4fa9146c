"""HTTP API benchmark: 1,000 stored jobs (a tenth running, each with its workloads), the real
`spotshift api` server (uvicorn, one worker) on 127.0.0.1, and 50 concurrent clients (keep-alive
connections, one asyncio process) reading
GET /jobs/{id} (a random job) and GET /jobs?status=running for 30 s. Prints p50/p99 latency,
throughput, errors, and how loaded the machine was.

    nice -n 5 .venv/bin/python bench/api.py [--jobs 1000] [--clients 50] [--seconds 30] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# without PREFECT_API_URL the server's look-up of the AWS credentials block starts a temporary
# Prefect server, slow to come up on a loaded machine
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

import httpx  # noqa: E402

from blocks.stores import open_job_store, open_ledger, open_token_store  # noqa: E402
from deployments.local_aws import moto_server_process  # noqa: E402
from spotshift.models import EndReason, JobCreate, JobStatus, JobUpdate, Market, Workload  # noqa: E402
from spotshift.settings import Settings  # noqa: E402

LIVE_PATH = (JobStatus.PLANNING, JobStatus.PROVISIONING, JobStatus.RUNNING)


def store_jobs(settings: Settings, count: int, running_every: int = 10) -> list[str]:
    """`count` jobs; every `running_every`-th one running on its second instance (one preempted before)."""
    jobs, ledger, now = open_job_store(settings), open_ledger(settings), datetime.now(UTC)
    request = JobCreate(model="gpt2", dataset="s3://inputs/corpus.jsonl", max_steps=1000, budget_usd=20,
                        deadline=now + timedelta(days=3), instance_types=["p3.2xlarge"])
    ids = []
    for i in range(count):
        job = jobs.create(request, now=now)
        ids.append(job.id)
        if i % running_every:
            continue
        for to in LIVE_PATH:
            jobs.transition(job.id, to, now=now, update=JobUpdate(flow_run_id=str(uuid.uuid4()), step=i % 1000))
        first = now - timedelta(hours=2)
        ledger.upsert_workload(Workload(job_id=job.id, instance_type="p3.2xlarge", region="us-east-1",
                                        zone="us-east-1a", market=Market.SPOT, usd_per_hour=0.95, started_at=first,
                                        ended_at=first + timedelta(hours=1), billed_seconds=3600,
                                        end_reason=EndReason.PREEMPTED))
        ledger.upsert_workload(Workload(job_id=job.id, instance_type="p3.2xlarge", region="us-east-2",
                                        zone="us-east-2a", market=Market.SPOT, usd_per_hour=1.3,
                                        started_at=first + timedelta(hours=1, minutes=2)))
    return ids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict[str, str], port: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "deployments.cli", "api", "--host", "127.0.0.1", "--port",
                               str(port)], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
        if server.poll() is not None:
            raise RuntimeError(f"the API server exited: {server.stderr.read().decode()[-2000:]}")
    raise RuntimeError("the API server did not answer /health within 300 s")


class Connection:
    """One keep-alive HTTP/1.1 connection, requests written and answers parsed by hand: httpx would
    spend more CPU per request than the server does, on the same two cores."""

    def __init__(self, host: str, port: int, token: str):
        self._host, self._port = host, port
        self._head = f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        self._reader = self._writer = None

    async def get(self, path: str) -> int:
        """The status code of GET `path` (its body is read and dropped)."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        self._writer.write(f"GET {path} HTTP/1.1\r\n".encode() + self._head)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await self._reader.readexactly(length)
        return status

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


async def client_loop(port: int, token: str, ids: list[str], until: float, seed: int, out: dict) -> None:
    rng = random.Random(seed)
    connection = Connection("127.0.0.1", port, token)
    while time.monotonic() < until:
        route = "job" if rng.random() < 0.5 else "running"
        path = f"/jobs/{rng.choice(ids)}" if route == "job" else "/jobs?status=running"
        started = time.perf_counter()
        try:
            ok = await connection.get(path) == 200
        except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration):
            ok, connection = False, Connection("127.0.0.1", port, token)
        out[route].append(time.perf_counter() - started)
        out["errors"] += 0 if ok else 1
    connection.close()


async def load(port: int, token: str, ids: list[str], clients: int, seconds: float) -> dict:
    out: dict = {"job": [], "running": [], "errors": 0}
    until = time.monotonic() + seconds
    await asyncio.gather(*(client_loop(port, token, ids, until, seed, out) for seed in range(clients)))
    return out


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()

    home = Path(tempfile.mkdtemp(prefix="spotshift-bench-api-"))
    settings = Settings(home=home)
    t0 = time.monotonic()
    ids = store_jobs(settings, args.jobs)
    token = open_token_store(settings).create("bench", now=datetime.now(UTC))
    print(f"stored {len(ids)} jobs ({len(ids[::10])} running, 2 workloads each) in {time.monotonic() - t0:.0f} s")
    with moto_server_process() as endpoint:
        env = {**os.environ, "SPOTSHIFT_HOME": str(home), "SPOTSHIFT_AWS_ENDPOINT_URL": endpoint,
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        port = free_port()
        server = start_server(env, port)
        try:
            asyncio.run(load(port, token, ids, 5, 2.0))  # warm up: the first reads load the store's copies
            load_before, server_cpu = os.getloadavg(), cpu_seconds(server.pid)
            client_cpu, started = time.process_time(), time.monotonic()
            out = asyncio.run(load(port, token, ids, args.clients, args.seconds))
            wall = time.monotonic() - started
            figures = report(out, wall, cpu_seconds(server.pid) - server_cpu, time.process_time() - client_cpu,
                             load_before, os.getloadavg())
        finally:
            server.terminate()
            server.wait(30)
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0 if figures["errors"] == 0 else 1


def report(out: dict, wall: float, server_cpu: float, client_cpu: float, load_before, load_after) -> dict:
    every = out["job"] + out["running"]
    figures = {"requests": len(every), "errors": out["errors"], "wall_s": round(wall, 1),
               "requests_per_s": round(len(every) / wall), "cpus": os.cpu_count(),
               "loadavg_1m_before": round(load_before[0], 2), "loadavg_1m_after": round(load_after[0], 2),
               "server_cpu_s": round(server_cpu, 1), "client_cpu_s": round(client_cpu, 1),
               # what one request costs the server whatever else runs on the machine: 1000 / this is
               # the requests per second one free core would serve
               "server_cpu_ms_per_request": round(1000 * server_cpu / max(1, len(every)), 3)}
    for name, values in (("all", every), ("GET /jobs/{id}", out["job"]), ("GET /jobs?status=running", out["running"])):
        figures[name] = {"n": len(values), "p50_ms": round(percentile(values, 50) * 1000, 1),
                         "p99_ms": round(percentile(values, 99) * 1000, 1), "max_ms": round(max(values) * 1000, 1)}
    return figures


if __name__ == "__main__":
    sys.exit(main())
