"""Replay parity, pure: the placements a simulated run made (recorded from its policy's decisions)
and those a live run's ledger holds, side by side, with what differs between them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from spotshift.models import MarketSnapshot, Workload
from spotshift.policy.policies import Policy
from spotshift.policy.state import Decision, JobState, Move
from spotshift.sim.grid import TickJob
from spotshift.sim.market import TraceMarket
from spotshift.sim.simulator import RunResult, simulate


@dataclass(frozen=True)
class Placement:
    """One launch: when, where, on which market, and why (the policy's MigrationReason)."""

    at: datetime
    zone: str
    market: str
    reason: str = ""
    voluntary: bool = False  # the job was training elsewhere when it was decided
    cost_usd: float | None = None  # what the stint it began cost (when known)

    def line(self, origin: datetime) -> str:
        cost = "" if self.cost_usd is None else f" ${self.cost_usd:.4f}"
        minutes = (self.at - origin).total_seconds() / 60
        return f"+{minutes:7.2f} min  {self.zone:<11} {self.market:<9} {self.reason}{cost}"


@dataclass
class RecordingPolicy:
    """A policy that remembers every Move it decided (the simulator launches each one: a policy
    moves only to offers the snapshot lists, which the simulator's market has capacity for)."""

    inner: Policy
    moves: list[Placement] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.inner.name

    def decide(self, state: JobState, snapshot: MarketSnapshot, now: datetime) -> Decision:
        decision = self.inner.decide(state, snapshot, now)
        if isinstance(decision, Move):
            t = decision.target
            self.moves.append(Placement(now, t.zone, str(t.market), str(decision.reason),
                                        voluntary=state.current is not None))
        return decision


def simulated_placements(policy: Policy, market: TraceMarket, start: int, job: TickJob, *,
                         every_tick: bool = True, checkpoint_gb: float = 0.0,
                         checkpoint_region: str | None = None) -> tuple[RunResult, list[Placement]]:
    """Run `job` from tick `start` in the simulator (checkpoints kept in `checkpoint_region`, the
    job's bucket, as the flows keep them); its result and its launches in order."""
    recorder = RecordingPolicy(policy)
    result = simulate(recorder, market, start, job, every_tick=every_tick, checkpoint_gb=checkpoint_gb,
                      checkpoint_region=checkpoint_region)
    return result, recorder.moves


def stint_costs(market: TraceMarket, start: int, job: TickJob, moves: Sequence[Placement],
                result: RunResult) -> list[Placement]:
    """The simulated launches with what each stint cost: from its launch tick to the next launch, a
    preemption or the end (the last work tick billed by its fraction, as the simulator does)."""
    tick_s = market.traces.tick_seconds
    origin = market.time_of(start)
    ticks = [start + round((m.at - origin).total_seconds() / tick_s) for m in moves]
    zone_index = {z: i for i, z in enumerate(market.traces.zones)}
    end = start + result.end_tick
    out = []
    for i, (m, a) in enumerate(zip(moves, ticks)):
        b = ticks[i + 1] if i + 1 < len(ticks) else end
        z = zone_index[m.zone]
        if m.market == "spot":
            up = market.available[z, a:b]
            b = a + (int(up.argmin()) if not up.all() else len(up))  # until the zone is taken back
            prices = market.usd_per_tick[z, a:b]
        else:
            prices = [market.od_usd_per_tick] * (b - a)
        cost = float(sum(prices))
        if i + 1 == len(ticks) and result.finished and b == end and b > a:  # the last tick, by its fraction
            cost -= float(prices[-1]) * (1.0 - job.last_fraction)
        out.append(Placement(m.at, m.zone, m.market, m.reason, m.voluntary, cost))
    return out


def live_placements(workloads: Sequence[Workload]) -> list[Placement]:
    """A live job's launches from its ledger rows, in start order (the reason: how each one ended)."""
    return [Placement(w.started_at, w.zone, str(w.market), str(w.end_reason or "open"), cost_usd=w.cost_usd)
            for w in sorted(workloads, key=lambda w: w.started_at)]


@dataclass(frozen=True)
class ParityReport:
    """What differs between a simulated and a live run of one job (empty `differences`: none)."""

    simulated: list[Placement]
    live: list[Placement]
    sim_cost_usd: float
    live_cost_usd: float
    differences: list[str]

    @property
    def cost_ratio(self) -> float:
        return self.live_cost_usd / self.sim_cost_usd if self.sim_cost_usd else float("inf")

    def table(self, origin: datetime) -> str:
        rows = [f"{'#':>2}  {'simulator':<48} | live"]
        for i in range(max(len(self.simulated), len(self.live))):
            s = self.simulated[i].line(origin) if i < len(self.simulated) else "-"
            lv = self.live[i].line(origin) if i < len(self.live) else "-"
            rows.append(f"{i + 1:>2}  {s:<48} | {lv}")
        rows.append(f"cost: simulator ${self.sim_cost_usd:.4f}, live ${self.live_cost_usd:.4f} "
                    f"(live/sim {self.cost_ratio:.4f})")
        rows += [f"DIFFERS: {d}" for d in self.differences]
        return "\n".join(rows)


def compare_runs(simulated: Sequence[Placement], live: Sequence[Placement], sim_cost_usd: float,
                 live_cost_usd: float, *, tick: timedelta, cost_tolerance: float = 0.01) -> ParityReport:
    """Same placements (zone, market, start within one tick) in the same order, and the live cost
    within `cost_tolerance` of the simulator's: every difference named."""
    diffs = []
    if len(simulated) != len(live):
        diffs.append(f"{len(simulated)} launches in the simulator, {len(live)} live")
    for i, (s, lv) in enumerate(zip(simulated, live), 1):
        if (s.zone, s.market) != (lv.zone, lv.market):
            diffs.append(f"launch {i}: simulator {s.zone} {s.market}, live {lv.zone} {lv.market}")
        if abs(lv.at - s.at) > tick:
            diffs.append(f"launch {i}: simulator at {s.at.isoformat()}, live at {lv.at.isoformat()} "
                         f"({(lv.at - s.at).total_seconds():+.0f} s, more than one tick)")
    if sim_cost_usd <= 0 or abs(live_cost_usd - sim_cost_usd) > cost_tolerance * sim_cost_usd:
        diffs.append(f"cost: simulator ${sim_cost_usd:.4f}, live ${live_cost_usd:.4f} "
                     f"(more than {cost_tolerance:.0%} apart)")
    return ParityReport(list(simulated), list(live), sim_cost_usd, live_cost_usd, diffs)
