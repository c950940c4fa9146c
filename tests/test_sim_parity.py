"""The pure side of replay parity: launches recorded from a simulated run, compared with a ledger's,
and the simulator keeping checkpoints where the flows keep them (the job's bucket)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from spotshift.market.traces import TraceSet
from spotshift.models import EndReason, Market, Workload
from spotshift.policy import get_policy
from spotshift.policy.egress import transfer_cost_usd
from spotshift.sim import TickJob, TraceMarket
from spotshift.sim.parity import Placement, compare_runs, live_placements, simulated_placements, stint_costs

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TICK = timedelta(seconds=600)
ZONES = ("us-east-1a", "us-west-2a")


def market(west_up: list[bool]) -> TraceMarket:
    """us-east-1a never has spot; us-west-2a has it at $1/h where `west_up` says."""
    n = len(west_up)
    traces = TraceSet(names=tuple(f"{z}_v100_1" for z in ZONES), zones=ZONES, regions=("us-east-1", "us-west-2"),
                      gpu="v100", start=T0, tick_seconds=TICK.total_seconds(),
                      available=np.array([[False] * n, west_up]), spot_price=np.full((2, n), 1.0))
    return TraceMarket(traces, 3.06)


def test_same_launches_and_cost_make_no_difference():
    sim = [Placement(T0, "us-west-2a", "spot", "cheaper"), Placement(T0 + 3 * TICK, "us-east-1a", "on_demand")]
    live = [Placement(T0 + TICK / 2, "us-west-2a", "spot"), Placement(T0 + 3 * TICK, "us-east-1a", "on_demand")]
    assert compare_runs(sim, live, 2.0, 2.019, tick=TICK).differences == []


def test_each_difference_is_named():
    sim = [Placement(T0, "us-west-2a", "spot"), Placement(T0 + 3 * TICK, "us-east-1a", "on_demand")]
    live = [Placement(T0 + 2 * TICK, "us-west-2a", "spot"), Placement(T0 + 3 * TICK, "us-west-2a", "on_demand")]
    diffs = compare_runs(sim, live, 2.0, 2.05, tick=TICK).differences
    assert len(diffs) == 3
    assert "launch 1" in diffs[0] and "more than one tick" in diffs[0]
    assert diffs[1] == "launch 2: simulator us-east-1a on_demand, live us-west-2a on_demand"
    assert diffs[2].startswith("cost: simulator $2.0000, live $2.0500")
    assert compare_runs(sim, sim[:1], 2.0, 2.0, tick=TICK).differences == ["2 launches in the simulator, 1 live"]


def test_live_launches_come_from_the_ledger_in_start_order():
    rows = [Workload(job_id="j", plan_id="p", instance_id=f"i-{k}", instance_type="p3.2xlarge", region=r, zone=z,
                     market=m, usd_per_hour=usd, started_at=T0 + k * TICK, ended_at=T0 + (k + 1) * TICK,
                     billed_seconds=600.0, end_reason=e)
            for k, r, z, m, usd, e in [(1, "us-east-1", "us-east-1a", Market.ON_DEMAND, 3.06, EndReason.COMPLETED),
                                       (0, "us-west-2", "us-west-2a", Market.SPOT, 1.0, EndReason.PREEMPTED)]]
    assert [(p.zone, p.market, p.reason, round(p.cost_usd, 4)) for p in live_placements(rows)] == [
        ("us-west-2a", "spot", "preempted", 0.1667), ("us-east-1a", "on_demand", "completed", 0.51)]


@pytest.mark.parametrize("bucket_region, on_demand_zone", [(None, "us-west-2a"), ("us-east-1", "us-east-1a")])
def test_on_demand_after_a_stint_elsewhere_goes_where_the_checkpoints_are(bucket_region, on_demand_zone):
    # us-west-2a spot, taken back for good: the tight job ends on on-demand, which costs the same in
    # both regions; the Safety Net takes the one where the checkpoints are (None: where it last ran)
    m = market([True] * 3 + [False] * 57)
    job = TickJob(work_ticks=12, deadline_ticks=18, changeover_ticks=1)
    result, launches = simulated_placements(get_policy("greedy_multi"), m, 0, job, checkpoint_region=bucket_region)
    assert result.finished and result.preemptions == 1
    assert [(p.zone, p.market) for p in launches] == [("us-west-2a", "spot"), (on_demand_zone, "on_demand")]
    assert sum(s.cost_usd for s in stint_costs(m, 0, job, launches, result)) == pytest.approx(result.cost_usd)


def test_a_relaunch_reads_the_checkpoint_from_the_bucket_region():
    # us-west-2a spot, lost for three ticks, back: the relaunch there reads a 10 GB checkpoint from
    # a us-east-1 bucket (the flows' model); where checkpoints follow the instance it reads nothing
    m = market([True] * 3 + [False] * 3 + [True] * 54)
    job = TickJob(work_ticks=12, deadline_ticks=40, changeover_ticks=1)
    kept = simulated_placements(get_policy("greedy_multi"), m, 0, job, checkpoint_gb=10.0,
                                checkpoint_region="us-east-1")[0]
    followed = simulated_placements(get_policy("greedy_multi"), m, 0, job, checkpoint_gb=10.0)[0]
    assert kept.changeovers == followed.changeovers == 2
    assert followed.egress_usd == 0.0
    assert kept.egress_usd == pytest.approx(transfer_cost_usd("us-east-1", "us-west-2", 10.0)) and kept.egress_usd > 0
    assert kept.cost_usd == pytest.approx(followed.cost_usd + kept.egress_usd)
