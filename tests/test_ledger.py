"""Ledger: the embedded ledger's contract, and SupabaseLedger's HTTP requests against recorded PostgREST replies."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import respx

from blocks import SupabaseCredentials
from spotshift.models import EndReason, Market, Migration, MigrationReason, Offer, Plan, Workload
from spotshift.settings import Settings
from blocks.stores import open_ledger
from spotshift.stores import EmbeddedLedger, SupabaseLedger

T0 = datetime(2030, 1, 1, tzinfo=UTC)
MONGODB_URL = os.environ.get("SPOTSHIFT_TEST_MONGODB_URL")
NO_MONGO = "real MongoDB not configured: set SPOTSHIFT_TEST_MONGODB_URL=mongodb://... to run this backend"


def offer(zone="us-east-1a", price=0.5) -> Offer:
    return Offer(instance_type="g5.xlarge", gpu="A10G", gpu_count=1, gpu_memory_gib=24, vcpus=4, memory_gib=16,
                 region="us-east-1", zone=zone, market=Market.SPOT, usd_per_hour=price, observed_at=T0,
                 source="replay")


def plan(plan_id="plan-1", job_id="job-1", at=T0) -> Plan:
    return Plan(id=plan_id, job_id=job_id, offer=offer(), expected_hours=2.0, expected_cost_usd=1.0,
                deadline_slack_hours=5.0, alternatives=[offer("us-east-1b", 0.6)], reason="cheapest", created_at=at)


def workload(wl_id="wl-1", job_id="job-1", start=T0, **kw) -> Workload:
    return Workload(id=wl_id, job_id=job_id, plan_id="plan-1", instance_type="g5.xlarge", region="us-east-1",
                    zone="us-east-1a", market=Market.SPOT, usd_per_hour=0.5, started_at=start, **kw)


# --- the embedded ledger (and a real MongoDB through the same class) ------------------------------


@pytest.fixture(params=["embedded", pytest.param("mongodb", marks=pytest.mark.skipif(not MONGODB_URL, reason=NO_MONGO))])
def ledger(request, tmp_path):
    if request.param == "embedded":
        yield open_ledger(Settings(home=tmp_path))
        return
    from pymongo import MongoClient

    client, name = MongoClient(MONGODB_URL, tz_aware=True), f"spotshift_test_{uuid.uuid4().hex[:8]}"
    yield EmbeddedLedger(client[name])
    client.drop_database(name)


def test_open_ledger_without_supabase_is_embedded(tmp_path):
    assert isinstance(open_ledger(Settings(home=tmp_path)), EmbeddedLedger)


def test_open_ledger_with_supabase_settings_is_supabase(tmp_path):
    settings = Settings(home=tmp_path, supabase_url="http://supabase.test", supabase_key="sb_secret_" + "k" * 30)
    assert isinstance(open_ledger(settings), SupabaseLedger)


def test_records_come_back_per_job_oldest_first(ledger):
    ledger.record_plan(plan("plan-2", at=T0 + timedelta(hours=1)))
    ledger.record_plan(plan("plan-1"))
    ledger.record_plan(plan("plan-x", job_id="job-2"))
    assert [p.id for p in ledger.plans("job-1")] == ["plan-1", "plan-2"]
    assert ledger.plans("job-1")[0] == plan("plan-1")
    assert ledger.plans("job-none") == []


def test_upserts_are_idempotent_and_keep_the_latest_values(ledger):
    started = workload()
    ledger.upsert_workload(started)
    ledger.upsert_workload(started)
    assert ledger.workloads("job-1") == [started]
    ended = started.model_copy(update={"ended_at": T0 + timedelta(hours=1), "billed_seconds": 3600.0,
                                       "end_reason": EndReason.PREEMPTED})
    ledger.upsert_workload(ended)
    assert ledger.workloads("job-1") == [ended]
    assert ledger.workloads("job-1")[0].cost_usd == pytest.approx(0.5)


def test_open_workloads_are_those_not_ended(ledger):
    ledger.upsert_workload(workload("wl-1", ended_at=T0 + timedelta(hours=1), end_reason=EndReason.MIGRATED))
    ledger.upsert_workload(workload("wl-2", start=T0 + timedelta(hours=1)))
    ledger.upsert_workload(workload("wl-3", job_id="job-2"))
    assert [w.id for w in ledger.open_workloads("job-1")] == ["wl-2"]
    assert sorted(w.id for w in ledger.open_workloads()) == ["wl-2", "wl-3"]


def test_migrations_round_trip(ledger):
    move = Migration(id="mig-1", job_id="job-1", from_workload_id="wl-1", to_workload_id="wl-2",
                     reason=MigrationReason.CHEAPER, expected_saving_usd=3.5, started_at=T0)
    ledger.upsert_migration(move)
    done = move.model_copy(update={"finished_at": T0 + timedelta(minutes=2), "downtime_seconds": 120.0,
                                   "succeeded": True})
    ledger.upsert_migration(done)
    assert ledger.migrations("job-1") == [done]


def test_workloads_of_many_jobs_come_back_by_job_in_one_read(ledger):
    ledger.upsert_workload(workload("wl-2", "job-1", start=T0 + timedelta(hours=2)))
    ledger.upsert_workload(workload("wl-1", "job-1", start=T0))
    ledger.upsert_workload(workload("wl-3", "job-2", start=T0))
    ledger.upsert_workload(workload("wl-4", "job-3", start=T0))
    by_job = ledger.workloads_of(["job-1", "job-2", "job-9"])
    assert {k: [w.id for w in v] for k, v in by_job.items()} == {"job-1": ["wl-1", "wl-2"], "job-2": ["wl-3"],
                                                                 "job-9": []}


# --- SupabaseLedger at the HTTP level ---------------------------------------------------------------

SUPABASE = "http://supabase.test"
KEY = "sb_secret_" + "k" * 30

# PostgREST replies as recorded from the tables of supabase/migrations/*_init.sql (timestamptz
# rendered with +00:00, jsonb as nested JSON).
RECORDED_PLAN_ROW = {
    "id": "plan-1", "job_id": "job-1", "instance_type": "g5.xlarge", "region": "us-east-1", "zone": "us-east-1a",
    "market": "spot", "usd_per_hour": 0.5, "expected_hours": 2, "expected_cost_usd": 1, "deadline_slack_hours": 5,
    "reason": "cheapest",
    "offer": {"instance_type": "g5.xlarge", "gpu": "A10G", "gpu_count": 1, "gpu_memory_gib": 24, "vcpus": 4,
              "memory_gib": 16, "region": "us-east-1", "zone": "us-east-1a", "market": "spot", "usd_per_hour": 0.5,
              "interruption": {"bucket": None, "probability": None}, "observed_at": "2030-01-01T00:00:00+00:00",
              "source": "replay"},
    "alternatives": [{"instance_type": "g5.xlarge", "gpu": "A10G", "gpu_count": 1, "gpu_memory_gib": 24, "vcpus": 4,
                      "memory_gib": 16, "region": "us-east-1", "zone": "us-east-1b", "market": "spot",
                      "usd_per_hour": 0.6, "interruption": {"bucket": None, "probability": None},
                      "observed_at": "2030-01-01T00:00:00+00:00", "source": "replay"}],
    "created_at": "2030-01-01T00:00:00+00:00",
}
RECORDED_OPEN_WORKLOAD_ROW = {
    "id": "wl-2", "job_id": "job-1", "plan_id": "plan-1", "instance_id": "i-0abc", "instance_type": "g5.xlarge",
    "region": "us-east-1", "zone": "us-east-1a", "market": "spot", "usd_per_hour": 0.5,
    "started_at": "2030-01-01T01:00:00+00:00", "ended_at": None, "billed_seconds": None, "end_reason": None,
}


@pytest.fixture
def supabase():
    client = SupabaseCredentials(url=SUPABASE, key=KEY).get_client()
    with respx.mock(base_url=f"{SUPABASE}/rest/v1", assert_all_called=True) as router:
        yield SupabaseLedger(client), router


@pytest.mark.parametrize("table, write, record", [
    ("plans", "record_plan", plan()),
    ("workloads", "upsert_workload", workload()),
    ("migrations", "upsert_migration", Migration(id="mig-1", job_id="job-1", from_workload_id="wl-1",
                                                 reason=MigrationReason.PREEMPTED, started_at=T0)),
])
def test_writes_are_upserts_on_id(supabase, table, write, record):
    ledger, router = supabase
    route = router.post(f"/{table}", params={"on_conflict": "id"}).mock(return_value=httpx.Response(201, json=[]))
    getattr(ledger, write)(record)
    sent = route.calls.last.request
    assert "resolution=merge-duplicates" in sent.headers["prefer"]
    assert sent.headers["apikey"] == KEY
    body = json.loads(sent.content)
    assert body["id"] == record.id and body["job_id"] == "job-1"
    if table == "plans":
        assert (body["instance_type"], body["zone"], body["market"]) == ("g5.xlarge", "us-east-1a", "spot")
        assert body["offer"]["usd_per_hour"] == 0.5 and len(body["alternatives"]) == 1
    if table == "workloads":
        assert body["started_at"] == "2030-01-01T00:00:00Z" and body["ended_at"] is None


def test_plans_are_read_filtered_by_job_and_ordered(supabase):
    ledger, router = supabase
    route = router.get("/plans").mock(return_value=httpx.Response(200, json=[RECORDED_PLAN_ROW]))
    assert ledger.plans("job-1") == [plan()]
    params = route.calls.last.request.url.params
    assert params["job_id"] == "eq.job-1"
    assert params["order"] == "created_at.asc,id.asc"
    assert params["select"] == "*"


def test_open_workloads_filter_on_null_end(supabase):
    ledger, router = supabase
    route = router.get("/workloads").mock(return_value=httpx.Response(200, json=[RECORDED_OPEN_WORKLOAD_ROW]))
    [found] = ledger.open_workloads("job-1")
    assert found.id == "wl-2" and found.open and found.started_at == T0 + timedelta(hours=1)
    params = route.calls.last.request.url.params
    assert params["ended_at"] == "is.null" and params["job_id"] == "eq.job-1"
    ledger.open_workloads()
    assert "job_id" not in route.calls.last.request.url.params


def test_postgrest_error_is_raised_not_swallowed(supabase):
    ledger, router = supabase
    router.post("/workloads").mock(return_value=httpx.Response(
        403, json={"code": "42501", "message": 'new row violates row-level security policy for table "workloads"',
                   "details": None, "hint": None}))
    from postgrest.exceptions import APIError

    with pytest.raises(APIError, match="row-level security"):
        ledger.upsert_workload(workload())


def test_workloads_of_many_jobs_is_one_filtered_request(supabase):
    ledger, router = supabase
    route = router.get("/workloads").mock(return_value=httpx.Response(200, json=[RECORDED_OPEN_WORKLOAD_ROW]))
    by_job = ledger.workloads_of(["job-1", "job-2"])
    assert [w.id for w in by_job["job-1"]] == ["wl-2"] and by_job["job-2"] == []
    assert route.calls.last.request.url.params["job_id"] == "in.(job-1,job-2)"
