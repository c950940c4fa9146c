"""What perfect run-length prediction would buy: the spotshift policy on its online outlook vs on a
clairvoyant one that knows each up zone's true remaining run (an upper bound no online estimator reaches).

python bench/bounds.py --traces DIR [--prices FILE] [--zones SUBSTR] [--jf 0.6 0.7 ...] [--d HOURS]
                       [--starts N] [--seed S] [--json OUT] [--od-price USD] [--workers N]

The jobs are bench/cost.py's (same C0, same seeded start ticks per home zone). Only the outlook's
`run_hours` changes; everything else the policy sees (uptime, past runs, offers) is the online one,
so the gap between the two rows bounds what better run-length prediction alone could save.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.tracebench import (  # noqa: E402
    WORK_HOURS, Task, add_trace_options, finish, header, load_split, read_traces, run_all,
)
from spotshift.market.traces import TraceSet  # noqa: E402
from spotshift.policy import get_policy  # noqa: E402
from spotshift.policy.state import SpotOutlook  # noqa: E402
from spotshift.sim import TickJob, TraceMarket, optimal_costs, simulate  # noqa: E402

POLICY = "spotshift"
_markets: tuple[TraceMarket, TraceMarket] | None = None


class ClairvoyantRunMarket(TraceMarket):
    """A TraceMarket whose outlook is the online one except `run_hours`: for every zone up at the
    tick asked, the true hours left in its current run, read from the trace's future (a run that
    reaches the end of the trace counts until then)."""

    def __init__(self, traces: TraceSet, od_usd_per_hour: float, **kwargs) -> None:
        super().__init__(traces, od_usd_per_hour, **kwargs)
        self._run_end = np.stack([_run_end(row) for row in self.available])

    def true_run_hours(self, tick: int) -> dict[str, float]:
        """zone -> hours from `tick` until its capacity next goes, for the zones up at `tick`."""
        return {self.traces.zones[z]: float(self._run_end[z, tick] - tick) * self.tick_hours
                for z in np.flatnonzero(self.available[:, tick])}

    def outlook(self, tick: int) -> SpotOutlook:
        # not cached by the last market change: the true rest shrinks at every tick
        return dataclasses.replace(super().outlook(tick), run_hours=self.true_run_hours(tick))


def _run_end(available: np.ndarray) -> np.ndarray:
    """For each tick, the first tick at or after it where `available` is False (its length if none)."""
    down = np.append(np.flatnonzero(~available), len(available))
    return down[np.searchsorted(down, np.arange(len(available)))]


@dataclasses.dataclass(frozen=True)
class JobRow:
    jf: float
    optimum: float
    online_cost: float
    online_on_time: bool
    online_changeovers: int
    clairvoyant_cost: float
    clairvoyant_on_time: bool
    clairvoyant_changeovers: int


def run_start(online: TraceMarket, clairvoyant: ClairvoyantRunMarket, start: int, home: str,
              jfs: list[float], d: float, work_hours: float = WORK_HOURS) -> list[JobRow]:
    """The optimum and the spotshift policy on both outlooks, for one start tick and home zone, at every jf."""
    policy = get_policy(POLICY)
    jobs = [TickJob.from_hours(work_hours, work_hours / jf, d, online.traces.tick_seconds) for jf in jfs]
    opt = optimal_costs(online.available, online.usd_per_tick, online.od_usd_per_tick, start, jobs[0].work_ticks,
                        jobs[0].changeover_ticks, [j.deadline_ticks for j in jobs])
    rows = []
    for jf, job, best in zip(jfs, jobs, opt):
        a = simulate(policy, online, start, job, home_zone=home)
        b = simulate(policy, clairvoyant, start, job, home_zone=home)
        rows.append(JobRow(jf, best, a.cost_usd, a.on_time, a.changeovers, b.cost_usd, b.on_time, b.changeovers))
    return rows


def _init(traces: str, prices: str | None, zones: str | None, half: str | None, od_price: float) -> None:
    global _markets
    ts = load_split(traces, prices, zones, half)
    _markets = (TraceMarket(ts, od_price), ClairvoyantRunMarket(ts, od_price))


def _one_start(args: Task) -> list[JobRow]:
    start, home, jfs, d = args
    return run_start(*_markets, start, home, jfs, d)


def summarize(rows: list[JobRow], d: float) -> list[dict]:
    out = []
    for jf in sorted({r.jf for r in rows}):
        sel = [r for r in rows if r.jf == jf]
        on = np.array([r.online_cost / r.optimum for r in sel])
        cv = np.array([r.clairvoyant_cost / r.optimum for r in sel])
        gap = on.mean() - 1.0
        out.append({
            "policy": POLICY, "jf": jf, "d": d, "runs": len(sel),
            "online_mean_cost_over_opt": float(on.mean()),
            "online_p90_cost_over_opt": float(np.percentile(on, 90)),
            "clairvoyant_mean_cost_over_opt": float(cv.mean()),
            "clairvoyant_p90_cost_over_opt": float(np.percentile(cv, 90)),
            "online_miss_rate": float(np.mean([not r.online_on_time for r in sel])),
            "clairvoyant_miss_rate": float(np.mean([not r.clairvoyant_on_time for r in sel])),
            "online_mean_changeovers": float(np.mean([r.online_changeovers for r in sel])),
            "clairvoyant_mean_changeovers": float(np.mean([r.clairvoyant_changeovers for r in sel])),
            "mean_clairvoyant_over_online": float(np.mean([r.clairvoyant_cost / r.online_cost for r in sel])),
            "gap_closed": float((on.mean() - cv.mean()) / gap) if gap > 0 else 0.0,
        })
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_trace_options(ap)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    traces, od_price, tasks = read_traces(ap, a)
    rows = run_all(a.workers, _init, (a.traces, a.prices, a.zones, a.half, od_price), _one_start, tasks)
    results = summarize(rows, a.d)
    print(header(a, traces, od_price))
    print(f"policy {POLICY}: online outlook (baseline) vs clairvoyant run_hours (true rest of each zone's run)")
    print(f"{'jf':>5s} {'runs':>5s} | {'online mean/opt':>15s} {'p90':>7s} {'miss':>6s} {'moves':>6s} | "
          f"{'clairv mean/opt':>15s} {'p90':>7s} {'miss':>6s} {'moves':>6s} | {'clairv/online':>13s} {'gap closed':>10s}")
    for r in results:
        print(f"{r['jf']:5.2f} {r['runs']:5d} | {r['online_mean_cost_over_opt']:15.4f} {r['online_p90_cost_over_opt']:7.4f} "
              f"{r['online_miss_rate']:6.3f} {r['online_mean_changeovers']:6.2f} | "
              f"{r['clairvoyant_mean_cost_over_opt']:15.4f} {r['clairvoyant_p90_cost_over_opt']:7.4f} "
              f"{r['clairvoyant_miss_rate']:6.3f} {r['clairvoyant_mean_changeovers']:6.2f} | "
              f"{r['mean_clairvoyant_over_online']:13.4f} {r['gap_closed']:10.1%}")
    finish(a, results, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
