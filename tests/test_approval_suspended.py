"""Approval without a process: a train-job run of a deployment that must ask a human is suspended (its
process ends; the job waits AWAITING_APPROVAL holding nothing), and the answer (`spotshift approve`,
the Prefect UI's form, POST /approve) reschedules it: the rerun asks the same question under the same
key, gets the answer, and launches the very plan that was approved. A real Prefect runner executes
the deployment's runs in their own processes, as a worker would (tests/approval_flow.py: train-job's
body on the test's replayed market)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from deployments.demo_market import DemoTimeline, demo_market
from flows.runtime import Runtime
from spotshift.clock import VirtualClock
from spotshift.models import ApprovalMode, ApprovalPolicy, JobStatus
from tests.test_flows import SPEEDUP, model_uri, request  # noqa: F401 - a shared fixture

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("prefect"), pytest.mark.timeout(600)]


def _run_once(runner) -> None:
    """One query loop of the runner: it starts the scheduled runs and waits for their processes."""
    asyncio.run(runner.start(run_once=True))


def test_a_placement_waiting_for_a_human_holds_no_process_and_the_answer_launches_the_plan(
        prefect_api, moto_endpoint, model_uri, tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.runner import Runner
    from prefect.settings import PREFECT_API_URL

    from deployments import api
    from tests.approval_flow import train_on_demo_market

    start, wall0 = datetime.now(UTC).replace(microsecond=0), time.time()
    clock = VirtualClock(start=start, speedup=SPEEDUP, _wall0=wall0, _wall=time.time)
    rt = Runtime.local(moto_endpoint, tmp_path, clock=clock, bucket="flow-jobs",
                       market=demo_market(start, DemoTimeline(lost_minute=10_000, cheap_minute=10_000)),
                       settings={"data_prefixes": ["s3://flow-inputs/"]})
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())  # the runner's flow processes
    approval = ApprovalPolicy(mode=ApprovalMode.ALWAYS_ASK, timeout_s=600)
    job = rt.jobs.create(request(rt, model_uri, max_steps=20, key="suspended", approval=approval), now=rt.clock())
    runner = Runner(name="approval-test", query_seconds=1, limit=2, pause_on_shutdown=False)
    runner.add_flow(train_on_demo_market, name="train-job")
    try:
        flow_run = run_deployment("train-job-on-demo-market/train-job", timeout=0, parameters=dict(
            job_id=job.id, endpoint=moto_endpoint, home=str(tmp_path), bucket="flow-jobs", start=start.isoformat(),
            wall0=wall0, speedup=SPEEDUP))
        _run_once(runner)  # the run asks and is suspended: its process has ended with the loop

        with get_client(sync_client=True) as client:
            suspended = client.read_flow_run(flow_run.id).state
        assert suspended.is_paused() and suspended.name == "Suspended", suspended
        waiting = rt.jobs.get(job.id)
        assert waiting.status is JobStatus.AWAITING_APPROVAL and waiting.pending_plan_id
        [asked] = rt.ledger.plans(job.id)
        assert asked.id == waiting.pending_plan_id
        assert rt.ledger.workloads(job.id) == [] and rt.backend.list(job.id) == []  # nothing paid for yet

        api.approve(job.id, comment="go", runtime=rt)
        _run_once(runner)  # the answer rescheduled the run: its rerun gets the answer and launches

        with get_client(sync_client=True) as client:
            done = client.read_flow_run(flow_run.id).state
        assert done.is_completed(), done
        placed = rt.jobs.get(job.id)
        assert placed.status is JobStatus.RUNNING
        [workload] = rt.ledger.workloads(job.id)
        assert workload.plan_id == asked.id and rt.ledger.plans(job.id) == [asked]  # the approved plan, not a new one
        assert any(e.kind == "status" and "approved by human" in e.message for e in placed.events)
        api.cancel(job.id, runtime=rt)
    finally:
        rt.backend.close()
    assert [i for i in rt.backend.list(job.id) if i.state in ("pending", "running")] == []
