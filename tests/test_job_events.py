"""tasks/events.py: the spotshift.job.* Prefect events built from real records (Job, Workload, Plan),
sent through Prefect's events worker, and never failing the job that emits them. The end-to-end
sequence of a job (placed, preempted, placed, moved, finished) is asserted in tests/test_flows.py."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from spotshift.models import Job, JobCreate, JobStatus, Market, MigrationReason, Offer, Plan, Workload
from tasks import events

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
FLOW_RUN = "0b6e3a1e-5c3f-4a52-9d0e-2f4c7a1b9e01"


@pytest.fixture
def prefect_events(monkeypatch):
    """Prefect's test double for the events client, prefect.events.clients.AssertingEventsClient,
    installed as Prefect's own `asserting_events_worker` fixture does: emit_event runs as under a
    server (an API address is set, never contacted) and the client records what it was sent.
    Yields a function that drains the worker and returns the recorded events, in order."""
    from prefect.events.clients import AssertingEventsClient
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    AssertingEventsClient.reset()
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        worker = EventsWorker.instance(AssertingEventsClient)
        monkeypatch.setattr(EventsWorker, "instance", lambda *_: worker)

        def sent():
            worker.drain()
            return list(AssertingEventsClient.last.events) if AssertingEventsClient.last else []

        yield sent
        worker.drain()


def job(**changes) -> Job:
    request = JobCreate.model_validate(dict(
        name="llama-ft", model="s3://inputs/tiny/", dataset="s3://inputs/data/corpus.jsonl", max_steps=400,
        budget_usd=20, deadline=NOW + timedelta(days=1)), context={"now": NOW})
    fields = dict(status=JobStatus.RUNNING, step=120) | changes
    return Job(id="job-7", request=request, created_at=NOW, updated_at=NOW, flow_run_id=FLOW_RUN, **fields)


def workload(zone="us-east-1a", market=Market.SPOT, price=0.92, started=NOW - timedelta(hours=2), **changes):
    return Workload(job_id="job-7", instance_id=f"i-{zone}", instance_type="p3.2xlarge", region=zone[:-1], zone=zone,
                    market=market, usd_per_hour=price, started_at=started, **changes)


def plan_for(w: Workload) -> Plan:
    offer = Offer(instance_type=w.instance_type, gpu="V100", gpu_count=1, gpu_memory_gib=16, vcpus=8, memory_gib=61,
                  region=w.region, zone=w.zone, market=w.market, usd_per_hour=w.usd_per_hour, observed_at=NOW,
                  source="replay")
    return Plan(job_id="job-7", offer=offer, expected_hours=1.5, expected_cost_usd=1.38, deadline_slack_hours=20.0,
                created_at=NOW)


def test_placed_names_the_job_its_instance_zone_flow_run_and_plan():
    w = workload()
    spec = events.placed_event(job(), w, plan=plan_for(w), reason="submitted", cost_usd=0.5)

    assert spec.event == "spotshift.job.placed"
    assert spec.resource == {"prefect.resource.id": "spotshift.job.job-7", "prefect.resource.name": "llama-ft",
                             "spotshift.model": "s3://inputs/tiny/", "spotshift.method": "full",
                             "spotshift.instance-type": "p3.2xlarge", "spotshift.market": "spot",
                             "spotshift.region": "us-east-1", "spotshift.zone": "us-east-1a"}
    assert {r["prefect.resource.role"]: r["prefect.resource.id"] for r in spec.related} == {
        "flow-run": f"prefect.flow-run.{FLOW_RUN}", "instance": "spotshift.instance.i-us-east-1a",
        "zone": "spotshift.zone.us-east-1a"}
    p = spec.payload
    assert (p["instance_type"], p["zone"], p["region"], p["market"], p["usd_per_hour"]) == (
        "p3.2xlarge", "us-east-1a", "us-east-1", "spot", 0.92)
    assert (p["reason"], p["step"], p["max_steps"], p["cost_usd"], p["workload_id"]) == ("submitted", 120, 400, 0.5, w.id)
    assert (p["gpu"], p["expected_cost_usd"], p["expected_hours"], p["deadline_slack_hours"]) == ("V100", 1.38, 1.5, 20.0)


def test_moved_describes_the_new_placement_the_old_one_and_the_expected_saving():
    old, new = workload(), workload("us-west-2a", price=0.41)
    spec = events.moved_event(job(), old, new, reason=MigrationReason.CHEAPER, expected_saving_usd=3.21,
                              checkpoint_step=120, downtime_seconds=95.0, cost_usd=2.0)

    assert spec.event == "spotshift.job.moved" and spec.resource["spotshift.zone"] == "us-west-2a"
    assert (spec.payload["zone"], spec.payload["from"]["zone"], spec.payload["from"]["instance_id"]) == (
        "us-west-2a", "us-east-1a", "i-us-east-1a")
    assert (spec.payload["reason"], spec.payload["expected_saving_usd"], spec.payload["checkpoint_step"],
            spec.payload["downtime_seconds"]) == ("cheaper", 3.21, 120, 95.0)
    roles = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in spec.related}
    assert roles["instance"] == "spotshift.instance.i-us-west-2a"
    assert roles["previous-instance"] == "spotshift.instance.i-us-east-1a"
    assert (roles["zone"], roles["previous-zone"]) == ("spotshift.zone.us-west-2a", "spotshift.zone.us-east-1a")


def test_the_trainers_last_step_and_a_long_detail_are_reported_cut():
    spec = events.preempted_event(job(), workload(), detail="x" * 2000, step=133)
    assert spec.event == "spotshift.job.preempted"
    assert spec.payload["step"] == 133 and len(spec.payload["detail"]) == events.MAX_TEXT
    assert events.stalled_event(job(), workload(), detail="no heartbeat for 900 s").payload["step"] == 120


def test_ended_events_by_status_and_a_status_that_ends_nothing_is_refused():
    done = events.ended_event(job(status=JobStatus.SUCCEEDED), JobStatus.SUCCEEDED, cost_usd=4.0, on_demand_usd=12.5,
                              final_model="s3://b/jobs/job-7/final/")
    assert done.event == "spotshift.job.finished"
    assert (done.payload["final_model"], done.payload["cost_usd"], done.payload["saving_usd"]) == (
        "s3://b/jobs/job-7/final/", 4.0, 8.5)
    failed = events.ended_event(job(status=JobStatus.FAILED), JobStatus.FAILED, error="CUDA out of memory")
    assert (failed.event, failed.payload["error"]) == ("spotshift.job.failed", "CUDA out of memory")
    assert events.ended_event(job(), JobStatus.CANCELLED, message="by alice").event == "spotshift.job.cancelled"
    with pytest.raises(ValueError, match="status 'running' does not end a job. Choose between succeeded, failed, "
                                         "cancelled"):
        events.ended_event(job(), JobStatus.RUNNING)


def test_the_same_happening_gets_the_same_event_id_so_a_rerun_action_is_stored_once():
    w = workload()
    first = events.placed_event(job(), w, reason="submitted")
    again = events.placed_event(job(step=130), w, reason="submitted")
    other = events.placed_event(job(), workload("us-east-2a"), reason="preempted")
    assert first.id == again.id and first.id != other.id
    assert events.preempted_event(job(), w).id not in {first.id, events.stalled_event(job(), w).id}


def test_cost_so_far_bills_closed_workloads_as_billed_and_open_ones_up_to_now():
    closed = workload(started=NOW - timedelta(hours=3), ended_at=NOW - timedelta(hours=2), billed_seconds=3600.0)
    running = workload("us-east-2a", price=0.5, started=NOW - timedelta(minutes=30))
    just_started = workload("us-west-2a", price=0.6, started=NOW - timedelta(seconds=5))  # the 60 s minimum
    assert events.cost_so_far([closed, running, just_started], NOW) == pytest.approx(0.92 + 0.25 + 0.01)


def test_events_go_through_prefects_events_client_in_the_order_emitted(prefect_events):
    old, new = workload(), workload("us-west-2a", price=0.41)
    events.job_placed(job(), old, plan=plan_for(old), cost_usd=0.0)
    events.job_moved(job(), old, new, reason=MigrationReason.CHEAPER, expected_saving_usd=1.0, checkpoint_step=100)
    events.job_finished(job(status=JobStatus.SUCCEEDED), cost_usd=3.0, on_demand_usd=9.0, final_model="s3://b/f/")

    sent = prefect_events()
    assert [(e.event, e.resource.id) for e in sent] == [("spotshift.job.placed", "spotshift.job.job-7"),
                                                        ("spotshift.job.moved", "spotshift.job.job-7"),
                                                        ("spotshift.job.finished", "spotshift.job.job-7")]
    assert sent[1].payload["from"]["zone"] == "us-east-1a" and sent[2].payload["saving_usd"] == 6.0
    assert [r.id for r in sent[0].related] == [f"prefect.flow-run.{FLOW_RUN}", "spotshift.instance.i-us-east-1a",
                                               "spotshift.zone.us-east-1a"]


def test_an_event_prefect_refuses_is_logged_and_the_job_goes_on(prefect_events, caplog):
    """A real refusal: Prefect raises EventTooLarge from emit_event for an event over its size limit."""
    from prefect.settings import PREFECT_SERVER_EVENTS_MAXIMUM_SIZE_BYTES, temporary_settings

    with caplog.at_level(logging.WARNING, logger="spotshift.events"), \
            temporary_settings({PREFECT_SERVER_EVENTS_MAXIMUM_SIZE_BYTES: 200}):
        assert events.job_preempted(job(), workload(), detail="spot interruption notice") is None
    assert "spotshift.job.preempted for spotshift.job.job-7 not sent: EventTooLarge" in caplog.text
    assert prefect_events() == []


def test_a_record_that_makes_no_event_is_logged_and_the_job_goes_on(prefect_events, caplog):
    with caplog.at_level(logging.WARNING, logger="spotshift.events"):
        assert events.job_ended(job(), JobStatus.RUNNING) is None
    assert "does not end a job" in caplog.text
    assert prefect_events() == []


def test_an_unreadable_ledger_gives_no_cost_rather_than_an_error(caplog):
    class Unreachable:  # mock: a ledger whose store is down (the embedded store cannot be made to fail on demand)
        def workloads(self, job_id):
            raise ConnectionError("ledger unreachable")

    with caplog.at_level(logging.WARNING, logger="spotshift.events"):
        assert events.job_cost(Unreachable(), "job-7", NOW) is None
    assert "Cost of job job-7 not read" in caplog.text


def test_without_a_prefect_api_outside_a_run_nothing_is_sent(prefect_events):
    """A CLI outside any flow run, with no PREFECT_API_URL: emit_event would start an ephemeral
    Prefect server for the event; spotshift sends nothing instead."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert events.job_cancelled(job(status=JobStatus.CANCELLED), message="cancelled by the user") is None
    assert prefect_events() == []


def documented_automation() -> dict:
    """The automation docs/events.md tells users to create, as `prefect automation create --from-file` reads it."""
    import re
    from pathlib import Path

    import yaml

    text = (Path(__file__).resolve().parents[1] / "docs" / "events.md").read_text()
    [block] = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    return yaml.safe_load(block)


def received(spec: events.JobEventSpec):
    """The event as the Prefect server receives it (what its triggers judge)."""
    from prefect.events import Event
    from prefect.server.events.schemas.events import Event as ServerEvent

    sent = Event(event=spec.event, resource=spec.resource, related=spec.related, payload=spec.payload, id=spec.id)
    return ServerEvent.model_validate(sent.model_dump()).receive()


def test_the_documented_automation_fires_on_a_spot_preemption_only_and_its_message_renders():
    from prefect.events.schemas.automations import AutomationCore
    from prefect.server.events.schemas.automations import EventTrigger
    from prefect.server.utilities.user_templates import render_user_template_sync

    automation = AutomationCore.model_validate(documented_automation())
    trigger = EventTrigger.model_validate(automation.trigger.model_dump())
    preempted = events.preempted_event(job(), workload(), detail="spot interruption notice", step=133, cost_usd=1.84)

    assert trigger.covers(received(preempted))
    assert not trigger.covers(received(events.preempted_event(job(), workload(market=Market.ON_DEMAND))))
    assert not trigger.covers(received(events.placed_event(job(), workload())))
    assert not trigger.covers(received(events.stalled_event(job(), workload())))
    [notify] = automation.actions
    context = {"event": received(preempted)}
    assert render_user_template_sync(notify.subject, context) == "spotshift: llama-ft was preempted"
    assert render_user_template_sync(notify.body, context) == (
        "Job job-7 lost its p3.2xlarge in us-east-1a at step 133 of 400 ($1.84 so far); it resumes from its "
        "last checkpoint elsewhere.")


def test_a_failed_flow_runs_hook_ends_the_job_with_a_failed_event(prefect_events, moto_endpoint, tmp_path):
    """flows/hooks.py on the embedded runtime: the on_failure hook of a train-job run ends the job
    FAILED and sends spotshift.job.failed (a hook that finds the job ended sends nothing:
    tests/test_flows.py, the refused checkpoint)."""
    import uuid

    from prefect.client.schemas.objects import FlowRun
    from prefect.states import Failed

    from flows import hooks
    from flows.runtime import Runtime

    rt = Runtime.local(moto_endpoint, tmp_path, market=None, bucket="events-jobs",
                       backend_options={"watch_interval_s": None})
    try:
        stored = rt.jobs.create(job().request, now=rt.clock())
        for to in (JobStatus.PLANNING, JobStatus.PROVISIONING, JobStatus.RUNNING):
            rt.jobs.transition(stored.id, to, now=rt.clock())
        flow_run = FlowRun(id=uuid.uuid4(), name="train-x", flow_id=uuid.uuid4(), parameters={"job_id": stored.id})
        hooks.ACTIVE_RUNTIMES[str(flow_run.id)] = rt
        hooks.on_failure(None, flow_run, Failed(message="worker lost"))
    finally:
        rt.backend.close()

    assert rt.jobs.get(stored.id).status is JobStatus.FAILED
    [failed] = prefect_events()
    assert (failed.event, failed.resource.id) == ("spotshift.job.failed", f"spotshift.job.{stored.id}")
    assert failed.payload["error"] == "flow run train-x Failed: worker lost" == rt.jobs.get(stored.id).error
    assert f"prefect.flow-run.{flow_run.id}" in {r.id for r in failed.related} and failed.payload["cost_usd"] == 0
