"""spotshift.fleet: one pass's finding per running job (and per orphan instance), the action it calls
for and its idempotency key; the marks that carry a job's heartbeat bookkeeping to the next pass."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from spotshift.fleet import (
    Action, Finding, FleetMark, HeartbeatRead, RunningJob, Thresholds, action_key, judge_fleet,
)
from spotshift.instances import JOB_TAG, WORKLOAD_TAG, InstanceInfo
from spotshift.models import Job, JobCreate, JobMeasurements, JobStatus, Market, Workload
from spotshift.monitoring import RateMeter
from training.contract import Progress, TrainerState

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
REGION = "us-east-1"
THRESHOLDS = Thresholds(stall_seconds=600, first_heartbeat_seconds=1800)


def running(n: int = 1, started: datetime = T0 - timedelta(hours=1)) -> list[RunningJob]:
    out = []
    for i in range(n):
        request = JobCreate.model_validate(dict(
            name=f"j{i}", model="gpt2", dataset="s3://data/corpus.txt", max_steps=1000, budget_usd=50,
            deadline=T0 + timedelta(days=2), regions=[REGION], instance_types=["g5.xlarge"]), context={"now": T0})
        w = Workload(id=f"wl-{i}", job_id=f"job-{i}", instance_id=f"i-{i:017x}", instance_type="g5.xlarge",
                     region=REGION, zone=f"{REGION}a", market=Market.SPOT, usd_per_hour=0.5, started_at=started)
        job = Job(id=f"job-{i}", request=request, status=JobStatus.RUNNING, created_at=started, updated_at=started,
                  current_workload_id=w.id)
        out.append(RunningJob(job, w))
    return out


def instance(instance_id: str, state: str, job_id: str, workload_id: str | None = None,
             reason: str | None = None) -> InstanceInfo:
    tags = {JOB_TAG: job_id, **({WORKLOAD_TAG: workload_id} if workload_id else {})}
    return InstanceInfo(instance_id=instance_id, region=REGION, zone=f"{REGION}a", instance_type="g5.xlarge",
                        state=state, market=Market.SPOT, tags=tags, state_reason=reason)


def alive(rj: RunningJob, state: str = "running", reason: str | None = None) -> InstanceInfo:
    return instance(rj.workload.instance_id, state, rj.job.id, rj.workload.id, reason)


def beat(rj: RunningJob, step: int, at: datetime, state: TrainerState = TrainerState.training, **extra) -> HeartbeatRead:
    return HeartbeatRead(changed=True, etag=f'"{step}-{state.value}"', progress=Progress(
        state=state, step=step, max_steps=1000, instance_id=rj.workload.instance_id, updated_at=at, **extra))


def judge(jobs, instances, heartbeats, marks=None, now=T0, listed=(REGION,), open_ids=None, live=None):
    return judge_fleet(jobs, instances, heartbeats, marks or {}, now=now, listed_regions=listed,
                       open_workload_ids=open_ids if open_ids is not None else {j.workload.id for j in jobs},
                       live_job_ids=live if live is not None else {j.job.id for j in jobs}, thresholds=THRESHOLDS)


def only(judgment):
    assert len(judgment.findings) == 1
    return judgment.findings[0]


def test_a_training_job_is_healthy_and_two_heartbeats_measure_its_rate():
    [rj] = running()
    first = judge([rj], [alive(rj)], {rj.job.id: beat(rj, 100, T0)}, now=T0)
    f = only(first)
    assert (f.finding, f.action, f.step) == (Finding.HEALTHY, Action.NONE, 100)
    assert f.measured.training_workload_id == rj.workload.id and f.measured.steps_per_hour is None
    later = T0 + timedelta(minutes=1)
    second = only(judge([rj], [alive(rj)], {rj.job.id: beat(rj, 160, later)}, first.marks, now=later))
    assert second.step == 160
    assert second.measured.steps_per_hour == pytest.approx(3600.0)  # 60 steps in one minute
    assert second.measured.rate_instance_type == "g5.xlarge"


def test_an_unchanged_heartbeat_records_nothing_and_stalls_after_the_stall_time():
    [rj] = running()
    first = judge([rj], [alive(rj)], {rj.job.id: beat(rj, 100, T0)})
    unchanged = {rj.job.id: HeartbeatRead(changed=False, etag=first.marks[rj.job.id].etag)}
    soon = only(judge([rj], [alive(rj)], unchanged, first.marks, now=T0 + timedelta(seconds=599)))
    assert (soon.finding, soon.step, soon.measured) == (Finding.HEALTHY, None, None)
    late = only(judge([rj], [alive(rj)], unchanged, first.marks, now=T0 + timedelta(seconds=601)))
    assert (late.finding, late.action) == (Finding.STALLED, Action.RESTART)
    assert late.key == f"{rj.job.id}:{rj.workload.id}:restart"


def test_the_marks_of_a_pass_are_not_changed_by_the_next_one():
    [rj] = running()
    first = judge([rj], [alive(rj)], {rj.job.id: beat(rj, 100, T0)})
    judge([rj], [alive(rj)], {rj.job.id: beat(rj, 200, T0 + timedelta(minutes=1))}, first.marks,
          now=T0 + timedelta(minutes=1))
    assert first.marks[rj.job.id].meter.last_step == 100


@pytest.mark.parametrize("listing", ["missing", "shutting-down", "stopping"])
def test_an_instance_gone_from_its_regions_listing_is_preempted_and_recovered(listing):
    [rj] = running()
    instances = [] if listing == "missing" else [alive(rj, listing, "Server.SpotInstanceTermination")]
    f = only(judge([rj], instances, {rj.job.id: beat(rj, 100, T0)}))
    assert (f.finding, f.action) == (Finding.PREEMPTED, Action.RECOVER)
    assert f.key == action_key(rj.job.id, rj.workload.id, Action.RECOVER) == f"{rj.job.id}:{rj.workload.id}:recover"
    assert ("not listed" if listing == "missing" else listing) in f.detail


def test_a_missing_instance_counts_only_where_its_region_was_listed_and_after_the_listing_grace():
    [rj] = running()
    unlisted = only(judge([rj], [], {rj.job.id: beat(rj, 100, T0)}, listed=()))
    assert unlisted.finding is Finding.HEALTHY
    [young] = running(started=T0 - timedelta(seconds=10))
    assert only(judge([young], [], {})).finding is Finding.HEALTHY  # DescribeInstances may not know it yet
    # ... but once a pass has seen it listed, its absence from a later listing means it is gone
    seen = judge([young], [alive(young)], {})
    assert only(seen).finding is Finding.HEALTHY and seen.marks[young.job.id].listed
    gone = judge([young], [], {}, marks=seen.marks, now=T0 + timedelta(seconds=5))
    assert (only(gone).finding, only(gone).action) == (Finding.PREEMPTED, Action.RECOVER)


def test_a_checkpointed_trainer_is_preempted():
    [rj] = running()
    f = only(judge([rj], [alive(rj)], {rj.job.id: beat(rj, 300, T0, TrainerState.checkpointed,
                                                          stop_reason="spot interruption notice")}))
    assert (f.finding, f.action) == (Finding.PREEMPTED, Action.RECOVER)


def test_done_failed_and_failed_permanently():
    [rj] = running()
    done = only(judge([rj], [], {rj.job.id: beat(rj, 1000, T0, TrainerState.done)}))
    assert (done.finding, done.action) == (Finding.DONE, Action.FINALIZE)  # its instance powered off: still done
    failed = only(judge([rj], [alive(rj)], {rj.job.id: beat(rj, 5, T0, TrainerState.failed, error="CUDA error")}))
    assert (failed.finding, failed.action, failed.detail) == (Finding.FAILED, Action.RESTART, "CUDA error")
    permanent = only(judge([rj], [alive(rj)], {rj.job.id: beat(rj, 0, T0, TrainerState.failed, error="bad dataset",
                                                                  permanent=True)}))
    assert (permanent.finding, permanent.action) == (Finding.FAILED_PERMANENTLY, Action.FINALIZE)
    assert permanent.key.endswith(":finalize")


def test_a_heartbeat_of_the_previous_instance_is_not_this_ones_and_a_new_one_gets_its_first_heartbeat_time():
    [rj] = running()
    old = HeartbeatRead(changed=True, etag='"old"', progress=Progress(
        state=TrainerState.training, step=50, max_steps=1000, instance_id="i-previous", updated_at=T0))
    starting = only(judge([rj], [alive(rj)], {rj.job.id: old}, now=rj.workload.started_at + timedelta(seconds=1700)))
    assert (starting.finding, starting.step) == (Finding.HEALTHY, None)
    late = only(judge([rj], [alive(rj)], {rj.job.id: old}, now=rj.workload.started_at + timedelta(seconds=1900)))
    assert late.finding is Finding.STALLED


def test_a_mark_of_another_workload_is_dropped():
    [rj] = running(started=T0 - timedelta(minutes=15))  # its first heartbeat may take 30 minutes
    stale = {rj.job.id: FleetMark(workload_id="wl-old", last_sign_of_life=T0 - timedelta(days=1), etag='"x"',
                                  meter=RateMeter(first_step=1, first_at=T0 - timedelta(days=1)))}
    judgment = judge([rj], [alive(rj)], {}, stale)
    mark = judgment.marks[rj.job.id]
    assert (mark.workload_id, mark.etag, mark.meter.first_step) == (rj.workload.id, None, None)
    assert only(judgment).finding is Finding.HEALTHY


def test_orphans_are_tagged_instances_no_open_workload_owns():
    [rj] = running()
    closed = instance("i-closed", "running", rj.job.id, "wl-closed")
    dead_job = instance("i-dead", "pending", "job-gone")  # no workload tag: judged by its job
    leaving = instance("i-leaving", "shutting-down", "job-gone", "wl-x")
    judgment = judge([rj], [alive(rj), closed, dead_job, leaving], {rj.job.id: beat(rj, 1, T0)})
    orphans = {f.instance_id: f for f in judgment.findings if f.finding is Finding.ORPHAN}
    assert set(orphans) == {"i-closed", "i-dead"}
    assert orphans["i-closed"].key == f"{rj.job.id}:wl-closed:terminate_orphan"
    assert orphans["i-dead"].key == "job-gone:i-dead:terminate_orphan"
    assert [f.job_id for f in judgment.actions] == [rj.job.id, "job-gone"]


def test_every_finding_has_one_action_and_the_key_names_it():
    from spotshift.fleet import ACTION_OF

    assert set(ACTION_OF) == set(Finding)
    assert action_key("job-1", "wl-2", Action.FINALIZE) == "job-1:wl-2:finalize"
    with pytest.raises(ValueError, match="move"):
        action_key("job-1", "wl-2", "move")


def test_measurements_keep_what_the_job_had():
    [rj] = running()
    rj = RunningJob(rj.job.model_copy(update={"measured": JobMeasurements(checkpoint_gb=2.5, changeover_hours=0.3)}),
                    rj.workload)
    f = only(judge([rj], [alive(rj)], {rj.job.id: beat(rj, 10, T0)}))
    assert (f.measured.checkpoint_gb, f.measured.changeover_hours) == (2.5, 0.3)


def test_a_job_left_between_two_states_past_its_lease_is_adopted_once_per_abandonment():
    from spotshift.fleet import find_abandoned

    lease = timedelta(minutes=30)
    [rj] = running()
    base = rj.job.model_copy(update={"current_workload_id": "wl-0"})
    stale = T0 - lease - timedelta(seconds=1)
    jobs = [base.model_copy(update={"id": "job-moving", "status": JobStatus.MIGRATING, "updated_at": stale}),
            base.model_copy(update={"id": "job-placing", "status": JobStatus.PROVISIONING, "updated_at": stale,
                                    "current_workload_id": None}),
            # touched within the lease, or holding a lease beyond now (waiting for a first step): its run lives
            base.model_copy(update={"id": "job-fresh", "status": JobStatus.PLANNING, "updated_at": T0 - lease}),
            base.model_copy(update={"id": "job-held", "status": JobStatus.MIGRATING, "updated_at": stale,
                                    "lease_until": T0 + timedelta(seconds=1)}),
            # running jobs are the pass's own; one waiting to start has no action run yet; one waiting
            # for a human until its answer's deadline (lease_until) is left alone until then
            base.model_copy(update={"id": "job-running", "status": JobStatus.RUNNING, "updated_at": stale}),
            base.model_copy(update={"id": "job-asking", "status": JobStatus.AWAITING_APPROVAL, "updated_at": stale,
                                    "lease_until": T0 + timedelta(minutes=1)}),
            base.model_copy(update={"id": "job-pending", "status": JobStatus.PENDING, "updated_at": stale}),
            base.model_copy(update={"id": "job-unanswered", "status": JobStatus.AWAITING_APPROVAL,
                                    "updated_at": stale, "lease_until": stale})]
    found = find_abandoned(jobs, now=T0, lease=lease)
    assert [(f.job_id, f.finding, f.action) for f in found] == [
        ("job-moving", Finding.ABANDONED, Action.ADOPT), ("job-placing", Finding.ABANDONED, Action.ADOPT),
        ("job-unanswered", Finding.ABANDONED, Action.ADOPT)]
    assert found[0].key == f"job-moving:wl-0:adopt:{stale.timestamp():.0f}" and found[1].workload_id == "none"
    # an adoption that died too is tried again: the job's next update gives the finding a new key
    later = jobs[0].model_copy(update={"updated_at": stale + timedelta(minutes=5)})
    [again] = find_abandoned([later], now=T0 + timedelta(minutes=6), lease=lease)
    assert again.key != found[0].key
    # and the pass reports it among its actions
    judgment = judge_fleet([], [], {}, {}, now=T0, listed_regions=[REGION], open_workload_ids=set(),
                           live_job_ids={j.id for j in jobs}, mid_action=jobs,
                           thresholds=Thresholds(stall_seconds=600, lease_seconds=lease.total_seconds()))
    assert [f.job_id for f in judgment.actions] == ["job-moving", "job-placing", "job-unanswered"]


def test_with_no_lease_every_job_between_two_states_is_abandoned():
    """The controller in one process (flows/controller.py) acts on its jobs alone: a job it finds
    between two states was left there by a run that died, whatever lease that run had taken."""
    from spotshift.fleet import find_abandoned

    [rj] = running()
    held = rj.job.model_copy(update={"status": JobStatus.MIGRATING, "updated_at": T0,
                                     "lease_until": T0 + timedelta(hours=1)})
    assert [f.job_id for f in find_abandoned([held], now=T0, lease=timedelta(0))] == [held.id]
    assert find_abandoned([held], now=T0, lease=timedelta(seconds=1)) == []


def test_a_move_key_names_the_workload_the_target_and_the_last_decline():
    from spotshift.fleet import move_key

    first = move_key("job-1", "wl-2", "us-west-2/us-west-2a/p3.2xlarge/spot", None)
    assert first == "job-1:wl-2:move:us-west-2/us-west-2a/p3.2xlarge/spot"
    # the same move decided again while its run works or waits for a human: the same run
    assert move_key("job-1", "wl-2", "us-west-2/us-west-2a/p3.2xlarge/spot", None) == first
    # another target, another workload, or the same move after a decline's quiet time: a new run
    declined = move_key("job-1", "wl-2", "us-west-2/us-west-2a/p3.2xlarge/spot", T0)
    assert declined == f"{first}:after-{T0.timestamp():.0f}"
    assert len({first, declined, move_key("job-1", "wl-2", "us-east-2/us-east-2a/p3.2xlarge/spot", None),
                move_key("job-1", "wl-3", "us-west-2/us-west-2a/p3.2xlarge/spot", None)}) == 4
