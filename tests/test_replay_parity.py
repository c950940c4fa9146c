"""Replay parity (#13): one job through the real flows (train-job on the local backend, a replayed
window of the real 2023 V100 spot traces) and through the simulator, on the same windows: the same
launches (zone, market, start within one tick) and the same cost within 1%.

The live run is deterministic: a lockstep clock (tests/lockstep_clock.py) moves virtual time only
when the flow sleeps, one poll per trace tick (195 s, at the tick's start, where the simulator asks),
and the fake trainer's steps are a function of that clock (130 steps a tick, the first one ending a
changeover after its start; it checkpoints at once on a spot notice or a checkpoint request): no
machine load can stretch a stint or delay a preemption. Both keep checkpoints in the bucket's region.
Decisions and costs are printed (run with -s).

What this setting holds equal, and the flows do differently at other settings (see each comment):
- the simulator's regular tick grid (the CSVs' own timestamps drift from it, by up to 2 h);
- a snapshot per decision (the scout's 5-minute cache would hand the in-flow review an older tick);
- decisions at tick starts: polled faster, the flows launch at a Stay's `until` (the simulator at the
  next tick) and see a market change at their next review (the simulator at once)."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from spotshift.policy import get_policy
from spotshift.sim import TickJob, TraceMarket
from spotshift.sim.parity import ParityReport, compare_runs, live_placements, simulated_placements, stint_costs
from tests.lockstep_clock import LockstepClock, SettlingS3

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("prefect"), pytest.mark.timeout(600)]

FAKE_TRAINER = Path(__file__).with_name("fake_trainer.py")
V100 = "skynomad-artifact/data/real/availability/2023-02-15/processed"
OD_USD = 3.06  # p3.2xlarge on demand, $/h
POLLS_PER_TICK = 1  # the flow looks once per trace tick (195 s), at the tick's start, as the simulator does
STEPS_PER_POLL = 130  # 130 steps = one tick = 195/3600 V100-hours of work on a p3.2xlarge
BUCKET = "parity-jobs"
BUCKET_REGION = "us-east-1"  # the moto bucket's: where the flows keep the checkpoints, and so the simulator


@dataclass(frozen=True)
class Window:
    """A job started at `start_tick` of the traces, in ticks of work, deadline and changeover."""

    name: str
    start_tick: int
    work_ticks: int
    deadline_ticks: int
    changeover_ticks: int
    why: str


# Found by scanning the first 14 days of the traces with the simulator (every 3rd start tick, jobs of
# 30-55 ticks of work, deadline twice that, a one-tick changeover) for a short job with at least one
# preemption and one voluntary move; every such short job's voluntary move there is a return from
# on-demand to spot. The first 14 days only: the live outlook reads 14 days of recorded history, the
# simulator's the whole trace before the start.
WINDOWS = [
    Window("2023-02-25-0859", 4188, 30, 60, 1,
           "idles through the morning outage, goes on-demand at the deadline's reserve, leaves on-demand "
           "for us-east-1d spot (voluntary), us-east-1d is taken back -> us-west-2a"),
    Window("2023-02-24-2353", 4020, 35, 70, 1,
           "us-east-2a spot, taken back with no spot left -> idle, on-demand (us-east-1a: the checkpoints' region) "
           "at the deadline's reserve, back to spot in us-west-2b (voluntary)"),
]


@pytest.fixture(scope="module")
def traces(traces_dir):
    """The V100 traces on their regular 195 s grid (the simulator's time axis; the CSVs' own
    timestamps drift by up to two hours from it over the 45 days)."""
    from spotshift.market.traces import load_traces

    ts = load_traces(traces_dir / V100)
    return dataclasses.replace(ts, offsets_s=None)


@pytest.fixture(scope="module")
def model_ref(moto_endpoint) -> str:
    """A tiny model's config.json in S3: the flow sizes the job from it (the fake trainer never loads it)."""
    from spotshift.aws.moto_env import client, ensure_bucket

    ensure_bucket(moto_endpoint, "parity-inputs")
    config = {"model_type": "gpt2", "n_layer": 2, "n_embd": 32, "n_head": 2, "vocab_size": 256,
              "n_positions": 64, "bos_token_id": 0, "eos_token_id": 0}
    client("s3", moto_endpoint).put_object(Bucket="parity-inputs", Key="tiny/config.json",
                                           Body=json.dumps(config).encode())
    return "s3://parity-inputs/tiny/"


def simulate_window(traces, w: Window, every_tick: bool):
    market = TraceMarket(traces, OD_USD)
    job = TickJob(w.work_ticks, w.deadline_ticks, w.changeover_ticks)
    return simulated_placements(get_policy("spotshift"), market, w.start_tick, job, every_tick=every_tick,
                                checkpoint_region=BUCKET_REGION)


def run_live(traces, w: Window, home: Path, endpoint: str, model: str):
    """The job through train-job on the local backend: (summary, its workloads, its instances)."""
    from flows.runtime import Runtime
    from flows.controller import run_job
    from spotshift.hf import model_size
    from spotshift.market.replay import ReplayMarket
    from spotshift.models import ApprovalPolicy, JobCreate, JobUpdate
    from spotshift.sizing import JobSizing, single_gpu_memory_gib

    tick_s = traces.tick_seconds
    start = traces.time_of(w.start_tick)
    poll_s = tick_s / POLLS_PER_TICK
    market = ReplayMarket(traces, start=start, speedup=1.0, trace_offset_ticks=w.start_tick,
                          on_demand_usd_per_hour=OD_USD)
    clock = LockstepClock(start, home / "clock", home / "instances")
    trainer = [sys.executable, str(FAKE_TRAINER), "--clock-dir", str(home / "clock"),
               "--virtual-step-seconds", repr(poll_s / STEPS_PER_POLL),
               "--changeover-seconds", repr(w.changeover_ticks * tick_s)]
    rt = Runtime.local(endpoint, home, market=market, clock=clock, sleep=clock.sleep, bucket=BUCKET,
                       backend_options={"trainer_cmd": trainer, "watch_interval_s": None, "grace_s": 10.0},
                       poll_seconds=poll_s, rescout_seconds=tick_s, changeover_hours=w.changeover_ticks * tick_s / 3600,
                       on_demand_prices={"p3.2xlarge": OD_USD},  # the model's config: the user's bucket, granted
                       settings={"heartbeat_stall_seconds": 3600.0, "data_prefixes": ["s3://parity-inputs/"]})
    # spot notices at each new instant, before the trainers see it (the events poll() returns are
    # dropped: the monitor tells a lost instance by its trainer's checkpoint and its EC2 state)
    clock.on_advance.append(rt.backend.poll)
    rt = dataclasses.replace(rt, s3=SettlingS3(rt.s3, clock))  # a checkpoint request is honoured within its instant
    assert rt.bucket_region(BUCKET) == BUCKET_REGION
    request = JobCreate.model_validate(dict(
        name=f"parity-{w.name}", model=model, dataset="s3://parity-inputs/data.jsonl",
        max_steps=w.work_ticks * POLLS_PER_TICK * STEPS_PER_POLL, budget_usd=1000,
        regions=["us-east-1", "us-east-2", "us-west-2"], instance_types=["p3.2xlarge"],
        deadline=start + timedelta(seconds=w.deadline_ticks * tick_s), idempotency_key=w.name,
        approval=ApprovalPolicy(max_auto_plan_usd=1000, min_auto_saving_usd=0.0)), context={"now": start})
    job = rt.jobs.create(request, now=clock())
    sizing = JobSizing.of_job(request, model_size(model, s3_client=rt.s3))
    # the pre-run estimate is the simulator's work, until the trainer's measured rate replaces it
    rt.jobs.update(job.id, JobUpdate(sizing=sizing, gpu_memory_gib=single_gpu_memory_gib(sizing),
                                     total_work=w.work_ticks * tick_s / 3600), now=clock())
    try:
        summary = run_job(job.id, runtime=rt)
    finally:
        rt.backend.close()
    return summary, rt.ledger.workloads(job.id), rt.backend.list(job.id)


@dataclass(frozen=True)
class Parity:
    window: Window
    report: ParityReport
    summary: dict
    left_running: list


@pytest.fixture(scope="module", params=WINDOWS, ids=lambda w: w.name)
def parity(request, traces, prefect_api, moto_endpoint, model_ref, tmp_path_factory) -> Parity:
    """The window's job through the simulator and through the flows, compared (and printed)."""
    import time

    import tasks.scout

    window: Window = request.param
    sim, sim_moves = simulate_window(traces, window, every_tick=True)
    events, event_moves = simulate_window(traces, window, every_tick=False)
    assert (events.cost_usd, event_moves) == (sim.cost_usd, sim_moves)  # #14: cadence does not change decisions
    assert sim.finished and sim.preemptions >= 1 and any(p.voluntary for p in sim_moves)  # the window's case
    job = TickJob(window.work_ticks, window.deadline_ticks, window.changeover_ticks)
    sim_stints = stint_costs(TraceMarket(traces, OD_USD), window.start_tick, job, sim_moves, sim)
    assert sum(s.cost_usd for s in sim_stints) == pytest.approx(sim.cost_usd)

    began, cpu = time.monotonic(), _cpu_seconds()
    with pytest.MonkeyPatch.context() as mp:
        # the in-flow review decides on the tick's snapshot, as the simulator does (the default
        # cache would hand it one up to 5 minutes old: more than a tick)
        mp.setattr(tasks.scout, "SETTINGS", tasks.scout.SETTINGS.model_copy(update={"scout_cache_seconds": 0}))
        summary, workloads, instances = run_live(traces, window, tmp_path_factory.mktemp(window.name),
                                                 moto_endpoint, model_ref)
    wall, cpu = time.monotonic() - began, _cpu_seconds() - cpu
    report = compare_runs(sim_stints, live_placements(workloads), sim.cost_usd, sum(w.cost_usd for w in workloads),
                          tick=timedelta(seconds=traces.tick_seconds))
    print(f"\n== window {window.name}: start tick {window.start_tick} ({traces.time_of(window.start_tick)}), "
          f"{window.work_ticks} ticks of work, deadline {window.deadline_ticks}, changeover {window.changeover_ticks}; "
          f"{window.why}\nlive run: {wall:.1f} s wall, {cpu:.1f} s CPU (flows, moto, trainers), {summary['steps']} steps, "
          f"status {summary['status']}")
    print(report.table(traces.time_of(window.start_tick)))
    return Parity(window, report, summary, [i for i in instances if i.state in ("pending", "running")])


def _cpu_seconds() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def test_the_flows_launch_where_and_when_the_simulator_does(parity):
    assert parity.summary["status"] == "succeeded"
    assert parity.left_running == []
    assert [d for d in parity.report.differences if not d.startswith("cost")] == []


def test_the_flows_pay_what_the_simulator_pays(parity):
    assert [d for d in parity.report.differences if d.startswith("cost")] == []
