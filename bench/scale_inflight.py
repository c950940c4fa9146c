"""Benchmark: what N jobs running at once cost the orchestrator (`bench/scale.py --in-flight N`): real
train-job flows on the local backend with the tests' fake trainer, a fast clock, one Prefect server.

A process work pool runs one process per flow run: `processes` starts N such processes (one
train_job each); `threads` runs the N flows in threads of one process; `alone` is one job by itself.
All share one moto server (in its own process), one embedded store under a temp home and one
`prefect server start` (SQLite). Once every job is RUNNING with a heartbeat seen, RSS/PSS and CPU
seconds of each kind of process are sampled from /proc over a window. The trainers stand in for the
instances and moto for AWS: both are reported, neither is the orchestrator.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.inflight_proc import KINDS, cmdline, descendants, group_usage, wait_until  # noqa: E402
from bench.inflight_report import Measurement, report, table  # noqa: E402

FAKE_TRAINER = REPO / "tests" / "fake_trainer.py"
BUCKET = "bench-inflight"
SPEEDUP = 60.0  # one wall second = one market minute
QUIET_MINUTE = 10**7  # the demo market's capacity loss and price drop never come
MODES = ("alone", "processes", "threads")


@dataclass(frozen=True)
class Options:
    """What every flow of the run is given (the worker processes get it as JSON)."""

    endpoint: str
    home: str
    api_url: str
    t0: str  # ISO wall time the market timeline starts; every process's virtual clock is anchored to it
    poll_seconds: float = 5.0
    step_seconds: float = 2.0  # the fake trainer writes progress.json once per step
    ramp_seconds: float = 0.0  # between two flow starts (a SQLite Prefect server refuses a burst with 503s)


# --- the flow processes -------------------------------------------------------------------------

def run_flows(options: Options, job_ids: list[str]) -> None:
    """Run train_job for each job id, each in its own thread with its own Runtime (montydb: one client per thread)."""
    import threading

    threads = [threading.Thread(target=_run_one, args=(options, job_id), name=f"flow-{job_id}") for job_id in job_ids]
    for t in threads:
        t.start()
        time.sleep(options.ramp_seconds)
    for t in threads:
        t.join()


def _run_one(options: Options, job_id: str) -> None:
    from deployments.demo_market import DemoTimeline, demo_traces
    from flows.runtime import Runtime
    from flows.train_job import train_job
    from spotshift.clock import VirtualClock
    from spotshift.market.replay import ReplayMarket

    t0 = datetime.fromisoformat(options.t0)
    trace_start = t0.replace(second=0, microsecond=0)
    market = ReplayMarket(demo_traces(trace_start, DemoTimeline(lost_minute=QUIET_MINUTE, cheap_minute=QUIET_MINUTE,
                                                                hours=24 * 14)), start=trace_start)
    clock = VirtualClock(start=t0 + (datetime.now(UTC) - t0) * SPEEDUP, speedup=SPEEDUP)
    # watch_interval_s=None: no watcher thread per runtime; the monitor's poll() does the checking, as on EC2
    backend = {"trainer_cmd": [sys.executable, str(FAKE_TRAINER), "--step-seconds", str(options.step_seconds)],
               "grace_s": 5.0, "watch_interval_s": None}
    rt = Runtime.local(options.endpoint, options.home, market=market, clock=clock, bucket=BUCKET,
                       backend_options=backend, poll_seconds=options.poll_seconds, on_demand_prices={"p3.2xlarge": 3.06},
                       settings={"heartbeat_stall_seconds": 24 * 3600.0})
    try:
        train_job(job_id, runtime=rt)
    finally:
        rt.backend.close()


# --- the shared parts: Prefect server, model, jobs --------------------------------------------

@contextmanager
def prefect_server(home: Path, timeout_s: float = 180.0) -> Iterator[tuple[subprocess.Popen, str]]:
    """`prefect server start` on a free port of 127.0.0.1 with SQLite under `home`; yield (process, API URL)."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_UI_ENABLED": "false", "PREFECT_API_URL": "",
           # SQLite on a crowded machine: wait for the database rather than answer 503 after 10 s
           "PREFECT_SERVER_DATABASE_TIMEOUT": "60", "PREFECT_SERVER_DATABASE_CONNECTION_TIMEOUT": "30"}
    log = open(home / "server.log", "ab")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host", "127.0.0.1",
                             "--port", str(port), "--no-ui"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited ({proc.returncode}); see {home / 'server.log'}")
        try:
            urllib.request.urlopen(f"{api}/health", timeout=2).close()
            return True
        except OSError:
            return False

    try:
        wait_until(healthy, timeout_s, "the Prefect server to answer")
        yield proc, api
    finally:
        _end_group(proc)
        log.close()


def stage_model(s3, bucket: str) -> str:
    """A tiny GPT-2's config.json and a safetensors file of its size (headers are all the flow reads)."""
    import struct

    config = {"model_type": "gpt2", "n_layer": 2, "n_embd": 32, "n_head": 2, "vocab_size": 256, "n_positions": 512}
    params = 2 * 12 * 32 * 32 + 256 * 32 + 512 * 32
    header = json.dumps({"wte": {"dtype": "F32", "shape": [params], "data_offsets": [0, 4 * params]}}).encode()
    s3.put_object(Bucket=bucket, Key="model/config.json", Body=json.dumps(config).encode())
    s3.put_object(Bucket=bucket, Key="model/model.safetensors",
                  Body=struct.pack("<Q", len(header)) + header + bytes(4 * params))
    s3.put_object(Bucket=bucket, Key="data/corpus.txt", Body=b"hello world\n" * 100)
    return f"s3://{bucket}/model/"


def create_jobs(settings, model: str, n: int, now: datetime, tag: str) -> list[str]:
    """n PENDING jobs in the embedded store, each long enough to outlast the measurement."""
    from blocks.stores import open_job_store
    from spotshift.models import ApprovalPolicy, JobCreate

    jobs = open_job_store(settings)
    ids = []
    for i in range(n):
        request = JobCreate.model_validate(dict(
            name=f"inflight-{tag}-{i}", model=model, dataset=f"s3://{BUCKET}/data/corpus.txt", max_steps=100_000,
            batch_size=4, seq_len=32, checkpoint_every_steps=1000, budget_usd=10_000,
            regions=["us-east-1", "us-east-2", "us-west-2"], instance_types=["p3.2xlarge"],
            deadline=now + timedelta(days=30), idempotency_key=f"inflight-{tag}-{i}",
            approval=ApprovalPolicy(max_auto_plan_usd=10_000, min_auto_saving_usd=0.01)), context={"now": now})
        ids.append(jobs.create(request, now=now).id)
    return ids


def _end_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace_s: float = 30.0) -> None:
    """Signal a process's group, then SIGKILL it after grace_s."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=grace_s)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


# --- one measurement --------------------------------------------------------------------------

def spawn_workers(options: Options, job_ids: list[str], mode: str) -> list[subprocess.Popen]:
    """One process per job (alone, processes) or one process with a thread per job (threads)."""
    env = {**os.environ, "PREFECT_API_URL": options.api_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "HF_HUB_OFFLINE": "1", "PREFECT_CLIENT_MAX_RETRIES": "20"}  # a burst of starts meets 503s: retry
    groups = [job_ids] if mode == "threads" else [[j] for j in job_ids]
    log = open(Path(options.home) / f"workers-{mode}.log", "ab")
    workers = []
    for group in groups:
        workers.append(subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(asdict(options)), *group],
                                        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO))
        time.sleep(options.ramp_seconds)
    return workers


def running_jobs(jobs, job_ids: list[str]) -> int:
    """How many of these jobs are RUNNING and have reported a step (the monitor saw a heartbeat)."""
    from spotshift.models import JobStatus

    return sum(1 for j in job_ids if (job := jobs.get(j)).status is JobStatus.RUNNING and job.step > 0)


def measure(options: Options, settings, model: str, mode: str, n: int, window_s: float, server_pid: int,
            moto_pid: int, startup_timeout_s: float) -> Measurement:
    """Start n flows in `mode`, wait until all run, sample every kind of process over window_s, stop them."""
    from blocks.stores import open_job_store

    job_ids = create_jobs(settings, model, n, datetime.now(UTC), f"{mode}-{n}-{time.time_ns()}")
    jobs = open_job_store(settings)
    started = time.monotonic()
    workers = spawn_workers(options, job_ids, mode)
    try:
        wait_until(lambda: running_jobs(jobs, job_ids) == n or _all_dead(workers), startup_timeout_s,
                   f"{n} jobs to run ({mode})", raise_on_timeout=False)
        startup = time.monotonic() - started
        running = running_jobs(jobs, job_ids)
        if running == 0:
            tail = (Path(options.home) / f"workers-{mode}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"no job ran in {mode} mode; the flow processes' log ends with:\n{tail}")
        usage = group_usage([w.pid for w in workers], server_pid, moto_pid, window_s)
        lags = monitor_lag_steps(jobs, settings, job_ids)
    finally:
        trainers = [pid for pid in descendants([w.pid for w in workers]) if str(FAKE_TRAINER) in cmdline(pid)]
        for w in workers:
            _end_group(w)
        for pid in trainers:  # their own sessions: a killed flow does not stop them
            if str(FAKE_TRAINER) in cmdline(pid):
                os.kill(pid, signal.SIGKILL)
    return Measurement(mode=mode, jobs=n, running=running, flow_processes=len(workers), startup_wall_s=round(startup, 1),
                       window_s=window_s, usage=usage,
                       monitor_lag_s=round(options.step_seconds * sum(lags) / max(1, len(lags)), 1),
                       monitor_lag_max_s=round(options.step_seconds * max(lags, default=0), 1),
                       load_average=float(Path("/proc/loadavg").read_text().split()[0]))


def monitor_lag_steps(jobs, settings, job_ids: list[str]) -> list[int]:
    """Per job, how many steps the store's view (what the monitor last saw) trails the trainer's heartbeat."""
    from spotshift.aws.moto_env import client
    from training.contract import read_progress

    s3 = client("s3", settings.aws_endpoint_url)
    lags = []
    for job_id in job_ids:
        job = jobs.get(job_id)
        progress = read_progress(s3, job.paths(settings.bucket).output)
        if progress is not None:
            lags.append(max(0, progress.step - job.step))
    return lags


def _all_dead(workers: list[subprocess.Popen]) -> bool:
    return all(w.poll() is not None for w in workers)


# --- the run ---------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--in-flight", type=int, help="jobs running at once")
    p.add_argument("--modes", default="alone,processes,threads", help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--window", type=float, default=30.0, help="wall seconds sampled once every job runs")
    p.add_argument("--poll-seconds", type=float, default=5.0, help="monitor poll interval (Settings default: 5)")
    p.add_argument("--step-seconds", type=float, default=2.0, help="the fake trainer's heartbeat interval")
    p.add_argument("--ramp-seconds", type=float, default=0.0, help="pause between two flow starts")
    p.add_argument("--startup-timeout", type=float, default=900.0)
    p.add_argument("--memory-fraction", type=float, default=0.5,
                   help="cap the processes mode's N so its processes take at most this share of MemAvailable")
    p.add_argument("--json", type=Path)
    p.add_argument("--report", type=Path, help="print the tables of a saved --json run instead of measuring")
    args = p.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(args.modes) - set(MODES))
    if unknown:
        p.error(f"--modes: unknown {unknown}. Choose between {', '.join(MODES)}")
    if not args.report and (args.in_flight is None or args.in_flight < 1):
        p.error("--in-flight N (N >= 1) or --report JSON is required")
    return args


def fitting_n(wanted: int, alone: Measurement | None, fraction: float) -> int:
    """The largest N <= wanted whose flow processes and trainers fit in `fraction` of MemAvailable (by alone's PSS)."""
    if alone is None:
        return wanted
    per_job_mib = alone.usage[KINDS[0]].pss_mib + alone.usage[KINDS[3]].pss_mib
    available_mib = _mem_available_mib()
    return max(1, min(wanted, int(fraction * available_mib / max(per_job_mib, 1.0))))


def _mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def run(args: argparse.Namespace) -> list[Measurement]:
    from deployments.local_aws import apply_env, client, ensure_bucket, moto_server_process
    from spotshift.settings import Settings

    results: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="inflight-") as tmp, moto_server_process() as endpoint:
        home = Path(tmp)
        apply_env(endpoint)
        moto_pid = next(pid for pid in descendants([os.getpid()]) if "moto.server" in cmdline(pid))
        ensure_bucket(endpoint, BUCKET)
        model = stage_model(client("s3", endpoint), BUCKET)
        settings = Settings(home=home, bucket=BUCKET, aws_endpoint_url=endpoint)
        (home / "prefect").mkdir()
        with prefect_server(home / "prefect") as (server, api_url):
            options = Options(endpoint=endpoint, home=str(home), api_url=api_url, t0=datetime.now(UTC).isoformat(),
                              poll_seconds=args.poll_seconds, step_seconds=args.step_seconds,
                              ramp_seconds=args.ramp_seconds)
            for mode in args.modes:
                alone = next((r for r in results if r.mode == "alone"), None)
                n = 1 if mode == "alone" else fitting_n(args.in_flight, alone, args.memory_fraction) \
                    if mode == "processes" else args.in_flight
                print(f"[{mode}] {n} job(s) ...", flush=True)
                results.append(measure(options, settings, model, mode, n, args.window, server.pid, moto_pid,
                                       args.startup_timeout))
                print(table(results[-1]), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:  # print a saved run's tables again (e.g. after the extrapolation changed)
        saved = json.loads(args.report.read_text())
        results = [Measurement.from_json(m) for m in saved["measurements"]]
        for m in results:
            print(table(m))
        report(results, saved["poll_seconds"])
        return 0
    started = time.perf_counter()
    results = run(args)
    wall_s = time.perf_counter() - started
    rows = report(results, args.poll_seconds)
    print(f"wall time: {wall_s:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"wall_s": round(wall_s, 1), "poll_seconds": args.poll_seconds,
                                         "measurements": [r.to_json() for r in results], "extrapolation": rows},
                                        indent=2, default=str))
    return 0


def worker_main(argv: list[str]) -> int:
    options = Options(**json.loads(argv[0]))
    run_flows(options, argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[2:]) if sys.argv[1:2] == ["--worker"] else main())
