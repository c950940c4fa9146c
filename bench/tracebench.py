"""What the trace benchmarks (bench/cost.py, bench/bounds.py) share: their options, the traces and
on-demand price they read, their jobs (seeded start ticks per home zone) and the pool that runs them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from spotshift.market.traces import TraceSet, load_traces
from spotshift.sim import TickJob

WORK_HOURS = 48.0  # C0 of every job
OD_PRICES = {"v100": 3.06}
Task = tuple[int, str, list[float], float]  # start tick, home zone, job fractions, changeover hours
HALVES = ("first", "second")


def add_trace_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--traces", required=True, help="folder of <zone>_<gpu>_1.csv availability traces")
    ap.add_argument("--prices", help="<gpu>_spot_prices.json (default: in the folder or its nearest parent)")
    ap.add_argument("--zones", help="keep zones whose name contains this, e.g. us-east-1")
    ap.add_argument("--jf", type=float, nargs="+", default=[0.6, 0.7, 0.8, 0.9, 0.95], help="job fractions C0/R0")
    ap.add_argument("--d", type=float, default=0.2, help="changeover delay in hours")
    ap.add_argument("--starts", type=int, default=100, help="random start ticks per home zone")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--od-price", type=float, help="on-demand $/h (default: 3.06 for v100)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--half", choices=HALVES, help="replay only this half in time of the traces (a split the "
                    "policy was not tuned on); the outlook sees only that half's past")


def read_traces(ap: argparse.ArgumentParser, a: argparse.Namespace) -> tuple[TraceSet, float, list[Task]]:
    """The traces, the on-demand $/h and the jobs the options ask for; a bad option ends in ap.error."""
    if any(not 0 < jf <= 1 for jf in a.jf):
        ap.error(f"--jf values must be in (0, 1], got {a.jf}")
    traces = load_split(a.traces, a.prices, a.zones, a.half)
    if np.isnan(traces.spot_price).all():
        ap.error(f"no spot prices for {a.traces}: pass --prices FILE")
    od_price = a.od_price or OD_PRICES.get(traces.gpu.lower())
    if od_price is None:
        ap.error(f"no default on-demand price for GPU {traces.gpu!r}: pass --od-price")
    try:
        tasks = start_tasks(traces, a.jf, a.d, a.starts, a.seed)
    except ValueError as e:
        ap.error(str(e))
    return traces, od_price, tasks


def load_split(traces: str, prices: str | None, zones: str | None, half: str | None) -> TraceSet:
    """The traces (the zones whose name contains `zones`), whole or only their `half` in time."""
    ts = load_traces(traces, prices, zones)
    if half is None:
        return ts
    if half not in HALVES:
        raise ValueError(f"unknown half {half!r}. Choose between {', '.join(HALVES)}")
    mid = ts.n_ticks // 2
    lo, hi = (0, mid) if half == "first" else (mid, ts.n_ticks)
    offsets = None if ts.offsets_s is None else ts.offsets_s[lo:hi] - ts.offsets_s[lo]
    return dataclasses.replace(ts, start=ts.time_of(lo), available=ts.available[:, lo:hi],
                               spot_price=ts.spot_price[:, lo:hi], offsets_s=offsets)


def start_tasks(traces: TraceSet, jfs: list[float], d: float, starts: int, seed: int) -> list[Task]:
    """`starts` seeded start ticks per home zone, early enough for the loosest job to fit."""
    longest = TickJob.from_hours(WORK_HOURS, WORK_HOURS / min(jfs), d, traces.tick_seconds).horizon
    if traces.n_ticks <= longest:
        raise ValueError(f"the traces hold {traces.n_ticks} ticks, fewer than the {longest} a job at jf {min(jfs)} spans")
    rng = np.random.default_rng(seed)
    return [(int(s), zone, jfs, d) for zone in traces.zones for s in rng.integers(0, traces.n_ticks - longest, starts)]


def run_all(workers: int, init: Callable[..., None], initargs: tuple, one_start: Callable[[Task], list],
            tasks: list[Task]) -> list:
    """Every task's rows, in order, over `workers` processes (each set up once by `init`)."""
    if workers > 1:
        with ProcessPoolExecutor(workers, initializer=init, initargs=initargs) as pool:
            return [r for chunk in pool.map(one_start, tasks, chunksize=8) for r in chunk]
    init(*initargs)
    return [r for t in tasks for r in one_start(t)]


def header(a: argparse.Namespace, traces: TraceSet, od_price: float) -> str:
    """The first line of a trace benchmark's report: what was replayed."""
    half = f" ({a.half} half: {traces.start:%Y-%m-%d %H:%M} to {traces.end:%Y-%m-%d %H:%M})" if a.half else ""
    return (f"traces {a.traces}{half} zones {', '.join(traces.zones)}; tick {traces.tick_seconds:.0f} s; "
            f"C0 {WORK_HOURS} h, d {a.d} h, on-demand ${od_price}/h; {a.starts} starts x {len(traces.zones)} home zones")


def finish(a: argparse.Namespace, results: list[dict], started: float) -> None:
    """Print the wall time since `started` and write the results where --json says."""
    print(f"wall {time.perf_counter() - started:.1f} s")
    if a.json:
        Path(a.json).write_text(json.dumps({"results": results}, indent=1))
