"""Cross-check against SkyNomad's published simulation: its V100 3-region windows replayed with our
optimum and every registered policy, next to its own oracle DP and online strategies from its CSV.

python bench/skynomad_check.py [--csv FILE] [--traces DIR] [--prices FILE] [--scenario NAME] [--od-price USD]

SkyNomad charges checkpoint egress on cross-region moves; so does our simulator when told the checkpoint
size (the window's checkpoint_size, priced by spotshift's egress table), and the policies are told it too.
Our optimum ignores egress (a lower bound); the egress its schedule would pay is shown beside it.
"""

from __future__ import annotations

import argparse
import ast
import csv
import dataclasses
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spotshift.market.traces import TraceSet, load_traces  # noqa: E402
from spotshift.policy import POLICIES, transfer_cost_usd  # noqa: E402
from spotshift.sim import OptimalSchedule, TickJob, TraceMarket, optimal_schedule, simulate  # noqa: E402

ARTIFACT = ROOT.parent / "shared" / "traces" / "skynomad-artifact"
DEFAULT_CSV = ARTIFACT / "research" / "data" / "v100.csv"
DEFAULT_TRACES = ARTIFACT / "data" / "real" / "availability" / "2023-02-15" / "processed"
DEFAULT_SCENARIO = "V100 Cross-Area (3 regions)"
THEIR_ORACLE = "multi_region_oracle_dp"


@dataclasses.dataclass(frozen=True)
class Window:
    """One of SkyNomad's runs: the job, where it starts, and what each of its strategies paid."""

    index: int
    zones: tuple[str, ...]
    start_hours: float
    task_hours: float
    deadline_hours: float
    restart_hours: float
    checkpoint_gb: float
    costs: dict[str, float]  # their multi-region strategy -> cost (USD)
    migrations: dict[str, int]


def egress(regions: list[str], checkpoint_gb: float) -> tuple[int, float]:
    """(cross-region moves, USD) of carrying the checkpoint from each launch's region to the next."""
    pairs = [(a, b) for a, b in zip(regions, regions[1:]) if a != b]
    return len(pairs), sum(transfer_cost_usd(a, b, checkpoint_gb) for a, b in pairs)


def schedule_regions(schedule: OptimalSchedule, regions: tuple[str, ...]) -> list[str]:
    """The region of each launch of the optimum's schedule; on-demand (offered in every region) is
    launched where the checkpoint is, so it moves nothing."""
    out: list[str] = []
    inst, co = schedule.instance, schedule.changeover
    for t in range(len(inst)):
        if co[t] and (t == 0 or not co[t - 1] or inst[t] != inst[t - 1]):
            if inst[t] < len(regions):
                out.append(regions[int(inst[t])])
    return out


def read_windows(csv_path: Path, scenario: str) -> list[Window]:
    """SkyNomad's multi-region rows of `scenario`, one Window per window_index."""
    rows = [r for r in csv.DictReader(csv_path.open()) if r["scenario_name"] == scenario]
    if not rows:
        names = sorted({r["scenario_name"] for r in csv.DictReader(csv_path.open())})
        raise ValueError(f"no rows for scenario {scenario!r} in {csv_path}. Choose between {', '.join(names)}")
    by_window: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        if r["task_type"] == "multi_region":
            by_window[int(r["window_index"])].append(r)
    windows = []
    for index, group in sorted(by_window.items()):
        first = group[0]
        windows.append(Window(
            index=index,
            zones=tuple(name.rsplit("_", 2)[0] for name in ast.literal_eval(first["regions_in_scenario"])),
            start_hours=float(first["env_start_hours"]), task_hours=float(first["task_duration"]),
            deadline_hours=float(first["deadline_hours"]), restart_hours=float(first["restart_overhead"]),
            checkpoint_gb=float(first["checkpoint_size"]),
            costs={r["strategy"]: float(r["cost"]) for r in group},
            migrations={r["strategy"]: int(r["migrations"]) for r in group},
        ))
    return windows


def pick_zones(traces: TraceSet, zones: tuple[str, ...]) -> TraceSet:
    """The given zones of `traces`, in that order."""
    keep = [traces.zone_index(z) for z in zones]
    return dataclasses.replace(
        traces, names=tuple(traces.names[i] for i in keep), zones=zones,
        regions=tuple(traces.regions[i] for i in keep), available=traces.available[keep],
        spot_price=traces.spot_price[keep],
    )


@dataclasses.dataclass(frozen=True)
class OurRun:
    policy: str
    cost: float
    on_time: bool
    changeovers: int
    cross_region: int
    egress: float


@dataclasses.dataclass(frozen=True)
class Replay:
    """Our side of one window: the start tick, the optimum (and the egress its schedule would pay)
    and every registered policy's run (its cost without egress, and the egress it paid)."""

    start: int
    optimum: float
    optimum_cross_region: int
    optimum_egress: float
    runs: dict[str, OurRun]


def replay(window: Window, market: TraceMarket) -> Replay:
    """Our optimum and every registered policy on one SkyNomad window."""
    start = round(window.start_hours / market.tick_hours)
    job = TickJob.from_hours(window.task_hours, window.deadline_hours, window.restart_hours, market.traces.tick_seconds)
    if start + job.horizon > market.traces.n_ticks:
        raise ValueError(f"window {window.index} (start {window.start_hours} h) runs past the end of the traces")
    schedule = optimal_schedule(market.available, market.usd_per_tick, market.od_usd_per_tick, start, job)
    opt_moves, opt_egress = egress(schedule_regions(schedule, market.traces.regions), window.checkpoint_gb)
    runs = {}
    for name, policy in POLICIES.items():
        home = None if getattr(policy, "multi_zone", True) else window.zones[0]
        r = simulate(policy, market, start, job, home_zone=home, checkpoint_gb=window.checkpoint_gb)
        runs[name] = OurRun(name, r.cost_usd - r.egress_usd, r.on_time, r.changeovers, r.cross_region_moves,
                            r.egress_usd)
    return Replay(start, schedule.cost_usd, opt_moves, opt_egress, runs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="SkyNomad's results CSV (read in place)")
    ap.add_argument("--traces", type=Path, default=DEFAULT_TRACES, help="folder of <zone>_<gpu>_1.csv traces")
    ap.add_argument("--prices", help="<gpu>_spot_prices.json (default: in the folder or its nearest parent)")
    ap.add_argument("--scenario", default=DEFAULT_SCENARIO)
    ap.add_argument("--od-price", type=float, default=3.06, help="on-demand $/h")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        windows = read_windows(a.csv, a.scenario)
    except ValueError as e:
        ap.error(str(e))
    traces = pick_zones(load_traces(a.traces, a.prices), windows[0].zones)
    market = TraceMarket(traces, a.od_price)
    theirs = sorted({s for w in windows for s in w.costs} - {THEIR_ORACLE})
    online = [s for s in theirs if "oracle" not in s]

    print(f"SkyNomad {a.scenario!r}: zones {', '.join(traces.zones)}; our tick {traces.tick_seconds:.0f} s; "
          f"on-demand ${a.od_price}/h; C0 {windows[0].task_hours:.2f} h, deadline {windows[0].deadline_hours:.2f} h, "
          f"d {windows[0].restart_hours} h, checkpoint {windows[0].checkpoint_gb:g} GB")
    print("\ntheir strategies: cost USD (cost / their oracle_dp) [migrations]")
    print(f"{'strategy':45s} " + " ".join(f"{'win ' + str(w.index) + ' @' + format(w.start_hours, '.1f') + ' h':>22s}"
                                          for w in windows) + f" {'mean ratio':>10s}")
    for s in [THEIR_ORACLE, *theirs]:
        cells = [f"{w.costs[s]:6.2f} ({w.costs[s] / w.costs[THEIR_ORACLE]:.3f}) [{w.migrations[s]}]" for w in windows]
        mean = np.mean([w.costs[s] / w.costs[THEIR_ORACLE] for w in windows])
        print(f"{s:45s} " + " ".join(f"{c:>22s}" for c in cells) + f" {mean:10.4f}")

    results = [(w, replay(w, market)) for w in windows]
    print("\nours vs theirs. best online = their cheapest strategy without 'oracle' in its name; opt egr = the egress"
          "\nour optimum's schedule would pay (xreg = its cross-region moves); spotshift w/ egr = (cost + egress) / our opt")
    print(f"{'win':>3s} {'tick':>6s} {'their opt':>9s} {'our opt':>8s} {'ours/th':>7s} {'opt egr':>7s} {'xreg':>4s} | "
          f"{'their best online':>30s} {'cost':>6s} {'/th opt':>7s} | {'spotshift':>9s} {'egress':>6s} {'/our opt':>8s} "
          f"{'w/ egr':>7s} {'moves':>5s} {'xreg':>4s} {'on time':>7s}")
    summary = defaultdict(list)
    for w, rep in results:
        oracle = w.costs[THEIR_ORACLE]
        best = min(online, key=lambda s: w.costs[s])
        ours = rep.runs["spotshift"]
        print(f"{w.index:3d} {rep.start:6d} {oracle:9.2f} {rep.optimum:8.2f} {rep.optimum / oracle:7.4f} "
              f"{rep.optimum_egress:7.2f} {rep.optimum_cross_region:4d} | {best:>30s} {w.costs[best]:6.2f} "
              f"{w.costs[best] / oracle:7.4f} | {ours.cost:9.2f} {ours.egress:6.2f} {ours.cost / rep.optimum:8.4f} "
              f"{(ours.cost + ours.egress) / rep.optimum:7.4f} {ours.changeovers:5d} {ours.cross_region:4d} "
              f"{str(ours.on_time):>7s}")
        summary["opt_ratio"].append(rep.optimum / oracle)
        summary["opt_egress_ratio"].append((rep.optimum + rep.optimum_egress) / oracle)
        summary["best_online"].append(w.costs[best] / oracle)
        summary["spotshift"].append(ours.cost / rep.optimum)
        summary["spotshift_egress"].append((ours.cost + ours.egress) / rep.optimum)
        summary["spotshift_vs_their_oracle"].append((ours.cost + ours.egress) / oracle)
    print(f"mean: our opt / their oracle_dp {np.mean(summary['opt_ratio']):.4f} "
          f"({np.mean(summary['opt_egress_ratio']):.4f} with its egress); their best online / their oracle_dp "
          f"{np.mean(summary['best_online']):.4f}; spotshift / our opt {np.mean(summary['spotshift']):.4f}, "
          f"with egress {np.mean(summary['spotshift_egress']):.4f}; spotshift + egress / their oracle_dp "
          f"{np.mean(summary['spotshift_vs_their_oracle']):.4f}")

    print("\nevery registered policy: cost / our optimum ((cost + egress) / our optimum) [changeovers, cross-region, on time]")
    print(f"{'policy':30s} " + " ".join(f"{'win ' + str(w.index):>26s}" for w in windows) + f" {'mean':>16s}")
    for name in POLICIES:
        cells, ratios = [], []
        for _, rep in results:
            r = rep.runs[name]
            ratios.append((r.cost / rep.optimum, (r.cost + r.egress) / rep.optimum))
            cells.append(f"{ratios[-1][0]:.3f} ({ratios[-1][1]:.3f}) [{r.changeovers},{r.cross_region},"
                         f"{'y' if r.on_time else 'MISS'}]")
        mean = np.mean(ratios, axis=0)
        print(f"{name:30s} " + " ".join(f"{c:>26s}" for c in cells) + f" {mean[0]:.3f} ({mean[1]:.3f})")
    print(f"wall {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
