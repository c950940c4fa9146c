"""The jobs HTTP API through FastAPI's TestClient on fresh embedded stores: every route, its auth,
idempotent submit, 422/404/409/413 answers that change nothing stored, CORS, and an approval
answered through a real (paused) Prefect flow run."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from blocks.stores import open_job_store, open_ledger, open_token_store
from deployments.http.app import create_app
from deployments.http.reads import snapshot_reads
from flows.runtime import Runtime
from spotshift.models import JobStatus, JobUpdate, Market, Workload
from spotshift.settings import Settings
from training.contract import JobPaths, MetricsRecord, Progress, write_progress
from tests.waiting import wait_for

NOW = datetime.now(UTC).replace(microsecond=0)


def job_body(**overrides) -> dict:
    body = dict(model="gpt2", dataset="s3://inputs/data.txt", max_steps=100, budget_usd=5,
                deadline=(NOW + timedelta(days=2)).isoformat(), instance_types=["p3.2xlarge"])
    return {**body, **overrides}


class Api:
    """A client of the app over fresh stores, with a valid token."""

    def __init__(self, tmp_path, s3, bucket, **settings):
        self.settings = Settings(home=tmp_path, bucket=bucket, api_max_body_bytes=2048,
                                 api_cors_origins=["https://app.example.com"], **settings)
        self.rt = Runtime(settings=self.settings, jobs=open_job_store(self.settings),
                          ledger=open_ledger(self.settings), s3=s3, market=None, backend=None)
        self.tokens = open_token_store(self.settings)
        self.token = self.tokens.create("tests", now=NOW)
        reads, checked_tokens = snapshot_reads(self.settings)  # what `spotshift api` reads the embedded store with
        self.client = TestClient(create_app(self.rt, checked_tokens, reads=reads, submit_run="none"))

    def call(self, method: str, path: str, token: str | None = "", **kwargs):
        token = self.token if token == "" else token
        headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def job_in(self, status: JobStatus, **update) -> str:
        job_id = self.call("POST", "/jobs", json=job_body()).json()["id"]
        path = {JobStatus.RUNNING: [JobStatus.PLANNING, JobStatus.PROVISIONING, JobStatus.RUNNING],
                JobStatus.AWAITING_APPROVAL: [JobStatus.PLANNING, JobStatus.AWAITING_APPROVAL],
                JobStatus.PENDING: []}[status]
        for to in path:
            self.rt.jobs.transition(job_id, to, now=NOW)
        if update:
            self.rt.jobs.update(job_id, JobUpdate(**update), now=NOW)
        return job_id

    def stored(self) -> tuple:
        """Everything the stores hold, to compare before and after a refused request."""
        jobs = [j.model_dump() for j in self.rt.jobs.list()]
        ledger = [(self.rt.ledger.workloads(j["id"]), self.rt.ledger.migrations(j["id"])) for j in jobs]
        return jobs, ledger, [t.model_dump() for t in self.tokens.list()]


@pytest.fixture
def api(tmp_path, s3, bucket) -> Api:
    return Api(tmp_path, s3, bucket)


ROUTES = [("GET", "/jobs"), ("POST", "/jobs"), ("GET", "/jobs/{id}"), ("POST", "/jobs/{id}/approve"),
          ("POST", "/jobs/{id}/reject"), ("POST", "/jobs/{id}/cancel"), ("GET", "/jobs/{id}/metrics"),
          ("GET", "/jobs/{id}/view")]


def test_every_route_but_health_needs_an_active_token(api):
    job_id = api.job_in(JobStatus.RUNNING)
    revoked = api.tokens.create("old", now=NOW)
    api.tokens.revoke("old", now=NOW)
    before = api.stored()
    assert api.call("GET", "/health", token=None).json() == {"status": "ok"}
    for method, path in ROUTES:
        path = path.format(id=job_id)
        for token in (None, revoked, "sst_not-a-token"):
            answer = api.call(method, path, token=token, json=job_body())
            assert answer.status_code == 401, (method, path, token, answer.text)
            assert answer.headers["www-authenticate"] == "Bearer"
    assert api.stored() == before


def test_submit_is_idempotent_on_the_idempotency_key_header(api):
    first = api.call("POST", "/jobs", json=job_body(), headers={"Idempotency-Key": "nightly-42"})
    again = api.call("POST", "/jobs", json=job_body(), headers={"Idempotency-Key": "nightly-42"})
    other = api.call("POST", "/jobs", json=job_body(), headers={"Idempotency-Key": "nightly-43"})
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"] != other.json()["id"]
    assert first.json()["status"] == "pending" and first.json()["max_steps"] == 100
    stored = api.rt.jobs.list()
    assert sorted(j.idempotency_key for j in stored) == ["nightly-42", "nightly-43"]


def test_bad_input_is_a_422_naming_the_field_and_stores_nothing(api):
    before = api.stored()
    answer = api.call("POST", "/jobs", json=job_body(max_steps=0, regions=["mars-north-1"]))
    assert answer.status_code == 422
    fields = {tuple(e["loc"]) for e in answer.json()["detail"]}
    assert ("body", "max_steps") in fields and ("body", "regions") in fields
    assert "Choose between" in answer.text
    answer = api.call("POST", "/jobs", json=job_body(), headers={"Idempotency-Key": "no spaces"})
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    answer = api.call("GET", "/jobs", params={"status": "runing"})
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["query", "status"]
    assert "running" in answer.json()["detail"][0]["msg"]
    assert api.call("POST", "/jobs", content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 422
    too_big = job_body(name="x" * 3000)
    assert api.call("POST", "/jobs", json=too_big).status_code == 413
    assert api.stored() == before


def test_an_ec2_job_reading_outside_every_granted_prefix_is_a_422_naming_the_field_and_stores_nothing(
        tmp_path, s3, bucket):
    api = Api(tmp_path, s3, bucket, compute_backend="ec2", data_prefixes=["s3://inputs/"])
    before = api.stored()
    answer = api.call("POST", "/jobs", json=job_body(model="s3://elsewhere/models/base"))
    assert answer.status_code == 422
    [problem] = answer.json()["detail"]
    assert problem["loc"] == ["body", "model"] and problem["input"] == "s3://elsewhere/models/base"
    assert "`spotshift aws setup --data s3://elsewhere/models/base/`" in problem["msg"]
    assert f"s3://{bucket}/jobs/, s3://inputs/" in problem["msg"]  # what may be read
    assert api.stored() == before and "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_an_ec2_job_with_a_local_model_answers_where_it_was_uploaded(tmp_path, s3, bucket, tiny_lm):
    api = Api(tmp_path, s3, bucket, compute_backend="ec2", data_prefixes=["s3://inputs/"])
    model_dir, _ = tiny_lm
    answer = api.call("POST", "/jobs", json=job_body(model=str(model_dir)))
    assert answer.status_code == 201, answer.text
    job_id = answer.json()["id"]
    [upload] = answer.json()["uploaded_inputs"]
    files = {p.relative_to(model_dir).as_posix(): p.stat().st_size for p in model_dir.rglob("*") if p.is_file()}
    assert upload["uri"] == f"s3://{bucket}/jobs/{job_id}/inputs/model/" == api.rt.jobs.get(job_id).request.model
    assert (upload["field"], upload["source"], upload["bytes"], upload["files"]) == (
        "model", str(model_dir), sum(files.values()), len(files))
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"jobs/{job_id}/inputs/model/")["Contents"]
    assert {o["Key"].rsplit("/model/", 1)[1]: o["Size"] for o in listed} == files


def test_unknown_jobs_are_404_and_a_wrong_state_is_a_409_with_the_current_one(api):
    running = api.job_in(JobStatus.RUNNING)
    before = api.stored()
    for method, path in ROUTES[2:]:
        answer = api.call(method, path.format(id="job-unknown"))
        assert answer.status_code == 404 and "job-unknown" in answer.json()["detail"], (method, path)
    for action in ("approve", "reject"):
        answer = api.call("POST", f"/jobs/{running}/{action}", json={"comment": "go"})
        assert answer.status_code == 409
        assert answer.json()["status"] == "running" and "awaiting approval" in answer.json()["detail"]
    assert api.stored() == before


def test_list_filters_by_status_and_pages(api):
    running = [api.job_in(JobStatus.RUNNING) for _ in range(3)]
    pending = api.job_in(JobStatus.PENDING)
    first = api.call("GET", "/jobs", params={"status": "running", "limit": 2}).json()
    assert [j["id"] for j in first["jobs"]] == running[:2] and first["total"] == 3 and first["next_offset"] == 2
    rest = api.call("GET", "/jobs", params={"status": "running", "offset": 2, "limit": 2}).json()
    assert [j["id"] for j in rest["jobs"]] == running[2:] and rest["next_offset"] is None
    everything = api.call("GET", "/jobs").json()
    assert [j["id"] for j in everything["jobs"]] == [*running, pending]
    # a write by another process's store shows at once (the API reads copies reloaded on every commit)
    open_job_store(api.settings).update(running[0], JobUpdate(step=17), now=NOW)
    assert api.call("GET", f"/jobs/{running[0]}").json()["step"] == 17
    assert api.call("GET", "/jobs", params={"status": "running"}).json()["jobs"][0]["step"] == 17


def test_a_job_shows_its_placements_cost_so_far_and_flow_run_link(api):
    flow_run_id = str(uuid.uuid4())
    job_id = api.job_in(JobStatus.RUNNING, flow_run_id=flow_run_id, step=30)
    assert api.call("GET", f"/jobs/{job_id}").json()["report"]["placements"] == []  # read (and copied) before
    started = datetime.now(UTC) - timedelta(minutes=30)
    api.rt.ledger.upsert_workload(Workload(job_id=job_id, instance_id="i-0123456789abcdef0",
                                           instance_type="p3.2xlarge", region="us-east-1", zone="us-east-1a",
                                           market=Market.SPOT, usd_per_hour=0.95, started_at=started))
    detail = api.call("GET", f"/jobs/{job_id}").json()
    assert detail["status"] == "running" and detail["step"] == 30
    assert detail["flow_run_url"] == f"http://127.0.0.1:4200/runs/flow-run/{flow_run_id}"
    [placement] = detail["report"]["placements"]
    assert placement["zone"] == "us-east-1a" and placement["end_reason"] == "running"
    # the open instance is billed up to now: 30 minutes at $0.95/h, against $3.06/h on demand
    assert detail["report"]["cost_usd"] == pytest.approx(0.95 / 2, abs=0.01)
    assert detail["report"]["on_demand_usd"] == pytest.approx(3.06 / 2, abs=0.02)


def test_metrics_come_from_metrics_jsonl_else_the_last_heartbeat(api, s3, bucket):
    job_id = api.job_in(JobStatus.RUNNING)
    assert api.call("GET", f"/jobs/{job_id}/metrics").json() == {"job_id": job_id, "source": "none", "points": []}
    output = JobPaths(bucket, job_id).output
    write_progress(s3, output, Progress(state="training", step=7, max_steps=100, loss=3.5, updated_at=NOW))
    answer = api.call("GET", f"/jobs/{job_id}/metrics").json()
    assert answer["source"] == "progress.json" and [(p["step"], p["loss"]) for p in answer["points"]] == [(7, 3.5)]
    lines = [MetricsRecord(step=s, loss=4.0 - s / 10, at=NOW).model_dump_json() for s in (5, 10)]
    s3.put_object(Bucket=bucket, Key=JobPaths(bucket, job_id).key("metrics.jsonl"), Body="\n".join(lines).encode())
    answer = api.call("GET", f"/jobs/{job_id}/metrics").json()
    assert answer["source"] == "metrics.jsonl" and [(p["step"], p["loss"]) for p in answer["points"]] == [(5, 3.5),
                                                                                                         (10, 3.0)]


def test_cors_answers_only_the_configured_origins(api):
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "Authorization"}
    allowed = api.call("OPTIONS", "/jobs", token=None, headers={"Origin": "https://app.example.com", **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    other = api.call("OPTIONS", "/jobs", token=None, headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in other.headers


def test_the_openapi_schema_lists_every_route(api):
    paths = api.client.get("/openapi.json").json()["paths"]
    assert set(paths) == {"/health", "/login", "/jobs", "/jobs/{job_id}", "/jobs/{job_id}/approve", "/jobs/{job_id}/reject",
                          "/jobs/{job_id}/cancel", "/jobs/{job_id}/metrics", "/jobs/{job_id}/view"}
    assert api.client.get("/docs").status_code == 200


# --- an approval answered through Prefect --------------------------------------------------------


@pytest.mark.xdist_group("prefect")
@pytest.mark.parametrize("action", ["approve", "reject"])
def test_an_approval_resumes_the_paused_flow_run_with_the_answer(prefect_api, api, action):
    from prefect import flow
    from prefect.flow_runs import pause_flow_run
    from prefect.runtime import flow_run

    from tasks.user_proxy import ApprovalInput

    job_id = api.job_in(JobStatus.AWAITING_APPROVAL)
    answers = []

    @flow
    def waits_for_approval():
        api.rt.jobs.update(job_id, JobUpdate(flow_run_id=str(flow_run.id)), now=NOW)
        answers.append(pause_flow_run(wait_for_input=ApprovalInput, timeout=60, poll_interval=1))

    thread = threading.Thread(target=waits_for_approval)
    thread.start()
    wait_for(lambda: _paused(api.rt.jobs.get(job_id).flow_run_id), 30, "the flow run to pause")
    answer = api.call("POST", f"/jobs/{job_id}/{action}", json={"comment": "by the API"})
    thread.join(60)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"job_id": job_id, "flow_run_id": api.rt.jobs.get(job_id).flow_run_id,
                             "approved": action == "approve"}
    assert [(a.approved, a.comment) for a in answers] == [(action == "approve", "by the API")]


def _paused(flow_run_id: str | None) -> bool:
    from prefect.client.orchestration import get_client

    if not flow_run_id:
        return False
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
    return state is not None and state.is_paused()
