"""The lifecycle core: one JobState builder (stints -> state), the place/move planners (a Wait when
the policy would rather idle), and the adoption planner (tests/test_migration_states.py: the
migration state machine)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from spotshift.instances import InstanceInfo, JOB_TAG, WORKLOAD_TAG
from spotshift.lifecycle.adoption import plan_adoption
from spotshift.lifecycle.plans import Wait, plan_move, plan_place
from spotshift.lifecycle.state import JobFacts, Stint, job_state, live_job_state
from spotshift.models import (
    EndReason, InterruptionRisk, Job, JobCreate, JobMeasurements, Market, MarketSnapshot, Migration, MigrationReason,
    MigrationState, Offer, Workload,
)
from spotshift.policy.state import Move, SpotOutlook

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
H = timedelta(hours=1)


def offer(zone: str, price: float, market: Market = Market.SPOT) -> Offer:
    return Offer(instance_type="p3.2xlarge", gpu="V100", gpu_count=1, gpu_memory_gib=16, vcpus=8, memory_gib=61,
                 region=zone[:-1], zone=zone, market=market, usd_per_hour=price, interruption=InterruptionRisk(),
                 observed_at=NOW, source="test")


def facts(**kw) -> JobFacts:
    base = dict(job_id="j", deadline=NOW + 20 * H, started_at=NOW - 5 * H, remaining_work=10.0, changeover_hours=0.2)
    return JobFacts(**{**base, **kw})


def test_state_of_a_job_preempted_then_idle():
    stints = [Stint(offer("us-east-1a", 0.9), NOW - 4 * H, NOW - H, EndReason.PREEMPTED, cost_usd=2.7)]
    s = job_state(facts(), stints)
    assert s.current is None and s.was_preempted and s.spent_usd == pytest.approx(2.7)
    assert s.home_zone == "us-east-1a" and s.moves == 0 and s.ready_at is None


def test_state_of_a_job_in_its_changeover_after_a_move():
    stints = [Stint(offer("us-east-1a", 0.9), NOW - 4 * H, NOW - H, EndReason.MIGRATED, cost_usd=2.7),
              Stint(offer("us-west-2a", 0.5), NOW - 0.1 * H, trained=False)]
    s = job_state(facts(), stints)
    assert s.current.zone == "us-west-2a" and not s.was_preempted and s.moves == 1
    assert s.ready_at == NOW - 0.1 * H + 0.2 * H  # start + changeover: not training yet
    assert s.last_move_at == NOW - 0.1 * H and s.spent_usd == pytest.approx(2.7)
    trained = job_state(facts(), [stints[0], Stint(offer("us-west-2a", 0.5), NOW - 0.1 * H, trained=True)])
    assert trained.ready_at is None


def _job(**measured) -> Job:
    request = JobCreate.model_validate(dict(model="gpt2", dataset="s3://bkt/d.txt", max_steps=1_000, budget_usd=100,
                                            deadline=NOW + 20 * H, instance_types=["p3.2xlarge"]),
                                       context={"now": NOW - 5 * H})
    return Job(id="job-1", request=request, created_at=NOW - 5 * H, updated_at=NOW, step=400, total_work=30.0,
               measured=JobMeasurements(**measured))


def test_live_state_uses_the_stored_rate_and_the_buckets_region():
    w = Workload(id="wl-1", job_id="job-1", instance_id="i-1", instance_type="p3.2xlarge", region="us-west-2",
                 zone="us-west-2b", market=Market.SPOT, usd_per_hour=0.6, started_at=NOW - 2 * H)
    job = _job(steps_per_hour=100.0, rate_instance_type="p3.2xlarge", training_workload_id="wl-1", checkpoint_gb=3.0)
    s = live_job_state(job, [w], now=NOW, default_changeover_hours=0.3, checkpoint_region="eu-west-1")
    assert s.remaining_work == pytest.approx(600 / 100)  # 600 steps left at 100 steps/h, V100-hours on a V100
    assert s.checkpoint_region == "eu-west-1" and s.checkpoint_gb == 3.0
    assert s.changeover_hours == 0.3 and s.ready_at is None and s.started_at == job.created_at
    fresh = live_job_state(_job(), [w], now=NOW, default_changeover_hours=0.3, checkpoint_region=None)
    assert fresh.remaining_work == pytest.approx(30.0 * 600 / 1_000)  # the pre-run estimate's share
    assert fresh.ready_at == w.started_at + 0.3 * H  # its trainer has not trained yet


def snapshot(*offers: Offer) -> MarketSnapshot:
    return MarketSnapshot(offers=list(offers), taken_at=NOW, source="test")


def test_plan_place_waits_when_the_policy_would_rather_idle():
    # spot is down everywhere the outlook expects it back within the hour; the deadline is far
    outlook = SpotOutlook(uptime=0.95, run_hours={}, gap_hours={"us-east-1a": 0.5}, as_of=NOW)
    state = job_state(facts(remaining_work=2.0, deadline=NOW + 40 * H, outlook=outlook), [])
    decision = plan_place(state, snapshot(offer("us-east-1a", 3.06, Market.ON_DEMAND)), NOW, frozenset(), "spotshift")
    assert isinstance(decision, Wait) and decision.until is not None and decision.until > NOW


def test_plan_place_launches_and_plans_price_the_work_left():
    state = job_state(facts(remaining_work=4.0, deadline=NOW + 5 * H), [])
    plan = plan_place(state, snapshot(offer("us-east-1a", 0.9), offer("us-east-1a", 3.06, Market.ON_DEMAND)),
                      NOW, frozenset(), "spotshift")
    assert not isinstance(plan, Wait)
    assert plan.expected_hours == pytest.approx(4.0 + 0.2)
    assert plan.expected_cost_usd == pytest.approx(4.2 * plan.offer.usd_per_hour)
    assert plan.deadline_slack_hours == pytest.approx(5.0 - 4.2)  # slack after finishing, always


def test_a_move_is_planned_with_its_real_cost():
    state = job_state(facts(remaining_work=8.0), [Stint(offer("us-east-1a", 0.9), NOW - H)])
    move = Move(target=offer("us-west-2a", 0.5), reason=MigrationReason.CHEAPER, expected_saving_usd=2.0)
    plan = plan_move(state, move, NOW)
    assert plan.offer.zone == "us-west-2a" and plan.expected_cost_usd == pytest.approx(8.2 * 0.5)
    assert plan.deadline_slack_hours == pytest.approx(20 - 8.2)


def _w(wid: str, start_h: float, *, open_: bool = True, instance: str | None = None) -> Workload:
    return Workload(id=wid, job_id="job-1", instance_id=instance if instance is not None else f"i-{wid}",
                    instance_type="p3.2xlarge", region="us-east-1", zone="us-east-1a", market=Market.SPOT,
                    usd_per_hour=0.9, started_at=NOW + start_h * H,
                    ended_at=None if open_ else NOW + (start_h + 1) * H)


def _i(wid: str | None, state: str = "running", iid: str | None = None) -> InstanceInfo:
    tags = {JOB_TAG: "job-1", **({WORKLOAD_TAG: wid} if wid else {})}
    return InstanceInfo(instance_id=iid or f"i-{wid}", region="us-east-1", zone="us-east-1a",
                        instance_type="p3.2xlarge", state=state, market=Market.SPOT, tags=tags)


def test_adoption_keeps_the_current_instance_and_stops_the_rest():
    old, new = _w("a", 0), _w("b", 1)
    pending = Migration(job_id="job-1", from_workload_id="a", reason=MigrationReason.CHEAPER, started_at=NOW)
    a = plan_adoption([old, new], [_i("a"), _i("b")], [pending], current_workload_id="a", trainer_exited=False,
                      now=NOW + H)
    assert a.keep.id == "a" and [i.instance_id for i in a.stop] == ["i-b"]
    assert [(w.id, r) for w, r in a.close] == [("b", EndReason.FAILED)]
    assert [(m.id, m.state, m.succeeded, m.finished_at) for m in a.finish] == [
        (pending.id, MigrationState.ABANDONED, False, NOW + H)]


def test_adoption_after_the_new_launch_keeps_the_target_of_the_move():
    # crashed after the old trainer checkpointed and exited and the new instance started: the
    # old row is closed as migrated, the new (its instance id not yet recorded) is kept
    old, new = _w("a", 0), _w("b", 1, instance="")
    pending = Migration(job_id="job-1", from_workload_id="a", to_workload_id=None, reason=MigrationReason.CHEAPER,
                        started_at=NOW)
    a = plan_adoption([old, new.model_copy(update={"instance_id": None})], [_i("a", "terminated"), _i("b")],
                      [pending], current_workload_id="a", trainer_exited=True, now=NOW + H)
    assert a.keep.id == "b" and a.keep.instance_id == "i-b" and a.stop == ()
    assert [(w.id, r) for w, r in a.close] == [("a", EndReason.MIGRATED)]
    assert [(m.id, m.state, m.to_workload_id, m.succeeded) for m in a.finish] == [
        (pending.id, MigrationState.RECORDED, "b", True)]


def test_adoption_with_nothing_alive_resumes_from_the_checkpoint_and_stops_untracked_instances():
    a = plan_adoption([_w("a", 0)], [_i(None, iid="i-stray")], [], current_workload_id="a", trainer_exited=False,
                      now=NOW)
    assert a.keep is None and [i.instance_id for i in a.stop] == ["i-stray"]
    assert [(w.id, r) for w, r in a.close] == [("a", EndReason.FAILED)]


def test_the_policy_prices_an_offer_for_the_gpus_the_job_uses():
    """With the job's rates (spotshift.sizing), an 8-GPU instance the job can use one GPU of costs its
    whole $/h for one GPU's work: the 1-GPU instance of the same GPU is cheaper per unit of work."""
    from spotshift.hf import size_from_formula
    from spotshift.sizing import JobSizing, TrainingShape, work_rates

    tiny = {"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 4, "intermediate_size": 512, "vocab_size": 1000}
    one_sample = JobSizing(model=size_from_formula(tiny), shape=TrainingShape(micro_batch=1, seq_len=128,
                                                                              samples_per_step=1))
    rates = work_rates(one_sample)
    big = offer("us-east-1a", 8.0, Market.ON_DEMAND).model_copy(update={"instance_type": "p3.16xlarge", "gpu_count": 8})
    small = offer("us-east-1a", 3.06, Market.ON_DEMAND)
    state = job_state(facts(remaining_work=2.0, deadline=NOW + 3 * H, work_rates=rates), [])
    plan = plan_place(state, snapshot(big, small), NOW, frozenset(), "spotshift")
    assert rates["p3.16xlarge"] == pytest.approx(rates["p3.2xlarge"])  # one sample a step: one GPU used
    assert plan.offer.instance_type == "p3.2xlarge"
    from spotshift.policy.view import make_view

    unpriced = make_view(job_state(facts(remaining_work=2.0, deadline=NOW + 3 * H), []), snapshot(big, small), NOW)
    assert unpriced.on_demand[0].instance_type == "p3.16xlarge"  # every GPU counted: the old mispricing
    assert make_view(state, snapshot(big, small), NOW).on_demand[0].instance_type == "p3.2xlarge"
