"""Cost benchmark: every registered policy vs the offline optimum on spot availability traces.

python bench/cost.py --traces DIR [--prices FILE] [--zones SUBSTR] [--half first|second] [--jf 0.6 0.7 ...]
                     [--d HOURS] [--starts N] [--seed S] [--json OUT] [--od-price USD] [--workers N]
                     [--checkpoint-gb GB] [--cadence events|tick] [--policies NAME ...]

--cadence: `events` (default) asks each policy when its last Stay stops holding or the market changes,
`tick` at every tick; a policy whose decisions do not depend on how often it is asked costs the same.
Per cell: mean, p90 and max (the worst run) of cost / optimum, the miss rate and moves per job.

--checkpoint-gb: the simulator charges carrying a checkpoint of that size on every launch in another
region (spotshift's egress table) and tells the policies its size; the optimum ignores the transfers
(still a lower bound). Default 0: no transfer costs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.tracebench import (  # noqa: E402
    WORK_HOURS, Task, add_trace_options, finish, header, load_split, read_traces, run_all,
)
from spotshift.policy import POLICIES  # noqa: E402
from spotshift.sim import TickJob, TraceMarket, optimal_costs, simulate  # noqa: E402

CADENCES = ("events", "tick")
_market: TraceMarket | None = None
_checkpoint_gb = 0.0
_every_tick = False
_policies: tuple[str, ...] = tuple(POLICIES)


def _init(traces: str, prices: str | None, zones: str | None, half: str | None, od_price: float,
          checkpoint_gb: float = 0.0, cadence: str = "events", policies: tuple[str, ...] = tuple(POLICIES)) -> None:
    global _market, _checkpoint_gb, _every_tick, _policies
    _market = TraceMarket(load_split(traces, prices, zones, half), od_price)
    _checkpoint_gb = checkpoint_gb
    _every_tick = cadence == "tick"
    _policies = policies


def _one_start(args: Task) -> list[tuple]:
    """Optimum and every policy for one start tick and home zone, at every job fraction."""
    start, home, jfs, d = args
    m = _market
    jobs = [TickJob.from_hours(WORK_HOURS, WORK_HOURS / jf, d, m.traces.tick_seconds) for jf in jfs]
    opt = optimal_costs(m.available, m.usd_per_tick, m.od_usd_per_tick, start, jobs[0].work_ticks,
                        jobs[0].changeover_ticks, [j.deadline_ticks for j in jobs])
    od = jobs[0].work_ticks * m.od_usd_per_tick + jobs[0].changeover_ticks * m.od_usd_per_tick
    rows = []
    for jf, job, best in zip(jfs, jobs, opt):
        rows.append(("optimal", jf, best, best, od, True, 0))
        for name in _policies:
            r = simulate(POLICIES[name], m, start, job, home_zone=home, checkpoint_gb=_checkpoint_gb,
                         every_tick=_every_tick)
            rows.append((name, jf, r.cost_usd, best, od, r.on_time, r.changeovers))
    return rows


def summarize(rows: list[tuple], d: float, policies: tuple[str, ...] = tuple(POLICIES)) -> list[dict]:
    out = []
    for name in ["optimal", *policies]:
        for jf in sorted({r[1] for r in rows}):
            sel = [r for r in rows if r[0] == name and r[1] == jf]
            ratio = np.array([r[2] / r[3] for r in sel])
            out.append({
                "policy": name, "jf": jf, "d": d, "runs": len(sel),
                "mean_cost_over_opt": float(ratio.mean()),
                "p90_cost_over_opt": float(np.percentile(ratio, 90)),
                "max_cost_over_opt": float(ratio.max()),
                "mean_cost_over_od": float(np.mean([r[2] / r[4] for r in sel])),
                "miss_rate": float(np.mean([not r[5] for r in sel])),
                "mean_changeovers": float(np.mean([r[6] for r in sel])),
            })
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_trace_options(ap)
    ap.add_argument("--checkpoint-gb", type=float, default=0.0,
                    help="checkpoint size: launches in another region pay its transfer (default 0)")
    ap.add_argument("--cadence", choices=CADENCES, default="events",
                    help="when the policies are asked: at events (default) or at every tick")
    ap.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES),
                    help="replay only these policies (default: every registered one)")
    a = ap.parse_args(argv)
    if a.checkpoint_gb < 0:
        ap.error(f"--checkpoint-gb must be >= 0, got {a.checkpoint_gb}")
    t0 = time.perf_counter()
    traces, od_price, tasks = read_traces(ap, a)
    setup = (a.traces, a.prices, a.zones, a.half, od_price, a.checkpoint_gb, a.cadence, tuple(a.policies))
    rows = run_all(a.workers, _init, setup, _one_start, tasks)
    results = summarize(rows, a.d, tuple(a.policies))
    print(header(a, traces, od_price)
          + f"; cadence {a.cadence}"
          + (f"; checkpoint {a.checkpoint_gb:g} GB (transfers charged, the optimum ignores them)" if a.checkpoint_gb else ""))
    print(f"{'policy':28s} {'jf':>5s} {'runs':>5s} {'mean/opt':>9s} {'p90/opt':>8s} {'max/opt':>8s} {'mean/od':>8s} {'miss':>6s} {'moves':>6s}")
    for r in results:
        print(f"{r['policy']:28s} {r['jf']:5.2f} {r['runs']:5d} {r['mean_cost_over_opt']:9.4f} "
              f"{r['p90_cost_over_opt']:8.4f} {r['max_cost_over_opt']:8.4f} {r['mean_cost_over_od']:8.4f} {r['miss_rate']:6.3f} {r['mean_changeovers']:6.2f}")
    finish(a, results, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
