"""JobStore contract suite: the embedded store always, a real MongoDB when SPOTSHIFT_TEST_MONGODB_URL is set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spotshift.models import ALLOWED_TRANSITIONS, JobCreate, JobEvent, JobStatus, JobUpdate
from spotshift.settings import Settings
from spotshift.stores import InvalidTransition, JobIdConflict, JobNotFound, JobStore, open_embedded_database

MONGODB_URL = os.environ.get("SPOTSHIFT_TEST_MONGODB_URL")
NO_MONGO = "real MongoDB not configured: set SPOTSHIFT_TEST_MONGODB_URL=mongodb://... to run this backend"
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[1]


def request(**overrides) -> JobCreate:
    payload = dict(model="gpt2", dataset="s3://spotshift-data/corpus.txt", max_steps=100, budget_usd=10.0,
                   deadline=datetime(2099, 1, 1, tzinfo=UTC))
    return JobCreate(**{**payload, **overrides})


def _settings_for(backend: str, tmp_path: Path) -> Settings:
    if backend == "mongodb":
        return Settings(home=tmp_path, mongodb_url=MONGODB_URL, mongodb_database=f"spotshift_test_{uuid.uuid4().hex[:8]}")
    return Settings(home=tmp_path)


BACKENDS = ["embedded", pytest.param("mongodb", marks=pytest.mark.skipif(not MONGODB_URL, reason=NO_MONGO))]


@pytest.fixture(params=BACKENDS)
def settings(request, tmp_path):
    s = _settings_for(request.param, tmp_path)
    yield s
    if request.param == "mongodb":
        from pymongo import MongoClient

        MongoClient(s.mongodb_url.get_secret_value()).drop_database(s.mongodb_database)


@pytest.fixture
def store(settings) -> JobStore:
    from blocks.stores import open_job_store

    return open_job_store(settings)


def test_create_then_get_round_trips_the_request(store):
    job = store.create(request(name="tiny"), now=T0)
    again = store.get(job.id)
    assert again.status is JobStatus.PENDING
    assert again.request == job.request
    assert again.created_at == T0 and again.updated_at == T0
    assert [e.kind for e in again.events] == ["created"]


def test_same_idempotency_key_twice_gives_one_job(store):
    first = store.create(request(idempotency_key="submit-1"), now=T0)
    second = store.create(request(idempotency_key="submit-1"), now=T0 + timedelta(minutes=1))
    assert second.id == first.id
    assert [j.id for j in store.list()] == [first.id]
    other = store.create(request(idempotency_key="submit-2"), now=T0)
    assert other.id != first.id


def test_jobs_without_a_key_are_distinct(store):
    a, b = store.create(request(), now=T0), store.create(request(), now=T0)
    assert a.id != b.id and len(store.list()) == 2


def test_explicit_job_id_taken_by_another_submission_is_refused(store):
    store.create(request(), now=T0, job_id="job-fixed")
    with pytest.raises(JobIdConflict, match="job-fixed"):
        store.create(request(), now=T0, job_id="job-fixed")


def test_get_unknown_job_raises_job_not_found(store):
    with pytest.raises(JobNotFound, match="nope"):
        store.get("nope")
    with pytest.raises(JobNotFound):
        store.update("nope", JobUpdate(step=1), now=T0)
    with pytest.raises(JobNotFound):
        store.append_event("nope", JobEvent(at=T0, kind="x"))
    with pytest.raises(JobNotFound):
        store.transition("nope", JobStatus.PLANNING, now=T0)


def test_list_filters_by_one_or_several_statuses_oldest_first(store):
    a = store.create(request(), now=T0)
    b = store.create(request(), now=T0 + timedelta(seconds=1))
    c = store.create(request(), now=T0 + timedelta(seconds=2))
    store.transition(b.id, JobStatus.PLANNING, now=T0)
    store.transition(c.id, JobStatus.CANCELLED, now=T0)
    assert [j.id for j in store.list()] == [a.id, b.id, c.id]
    assert [j.id for j in store.list(JobStatus.PENDING)] == [a.id]
    assert [j.id for j in store.list([JobStatus.PLANNING, JobStatus.CANCELLED])] == [b.id, c.id]
    assert store.list(JobStatus.RUNNING) == []


def test_transition_applies_update_and_records_an_event(store):
    job = store.create(request(), now=T0)
    later = T0 + timedelta(minutes=5)
    moved = store.transition(job.id, JobStatus.PLANNING, now=later,
                             update=JobUpdate(flow_run_id="run-1"), message="scouting")
    assert moved.status is JobStatus.PLANNING
    assert moved.flow_run_id == "run-1" and moved.updated_at == later
    assert moved.events[-1].kind == "status" and moved.events[-1].message == "scouting"
    assert moved.events[-1].data == {"to": "planning"}
    assert store.get(job.id) == moved


def test_disallowed_transition_is_refused_with_the_current_status(store):
    job = store.create(request(), now=T0)
    with pytest.raises(InvalidTransition) as refused:
        store.transition(job.id, JobStatus.RUNNING, now=T0)
    assert refused.value.current is JobStatus.PENDING
    assert "pending" in str(refused.value) and "running" in str(refused.value)
    assert store.get(job.id).status is JobStatus.PENDING


@pytest.mark.parametrize("terminal", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED])
def test_terminal_jobs_never_move_again(store, terminal):
    job = store.create(request(), now=T0)
    path = {JobStatus.SUCCEEDED: [JobStatus.PLANNING, JobStatus.PROVISIONING, JobStatus.RUNNING, JobStatus.SUCCEEDED],
            JobStatus.FAILED: [JobStatus.FAILED], JobStatus.CANCELLED: [JobStatus.CANCELLED]}[terminal]
    for status in path:
        store.transition(job.id, status, now=T0)
    for target in JobStatus:
        with pytest.raises(InvalidTransition) as refused:
            store.transition(job.id, target, now=T0)
        assert refused.value.current is terminal


def test_every_allowed_edge_is_accepted_and_every_other_refused(store):
    """Walk the whole state machine: each (from, to) pair behaves as ALLOWED_TRANSITIONS says."""
    reach = {JobStatus.PENDING: [], JobStatus.PLANNING: [JobStatus.PLANNING],
             JobStatus.AWAITING_APPROVAL: [JobStatus.PLANNING, JobStatus.AWAITING_APPROVAL],
             JobStatus.PROVISIONING: [JobStatus.PLANNING, JobStatus.PROVISIONING],
             JobStatus.RUNNING: [JobStatus.PLANNING, JobStatus.PROVISIONING, JobStatus.RUNNING],
             JobStatus.MIGRATING: [JobStatus.PLANNING, JobStatus.PROVISIONING, JobStatus.RUNNING, JobStatus.MIGRATING]}
    for source, path in reach.items():
        for target in JobStatus:
            job = store.create(request(), now=T0)
            for step in path:
                store.transition(job.id, step, now=T0)
            if target in ALLOWED_TRANSITIONS[source]:
                assert store.transition(job.id, target, now=T0).status is target
            else:
                with pytest.raises(InvalidTransition):
                    store.transition(job.id, target, now=T0)
                assert store.get(job.id).status is source


def test_update_changes_only_given_fields(store):
    job = store.create(request(), now=T0)
    store.update(job.id, JobUpdate(step=40, cost_usd=1.25), now=T0 + timedelta(seconds=30))
    updated = store.update(job.id, JobUpdate(step=50), now=T0 + timedelta(seconds=60))
    assert (updated.step, updated.cost_usd, updated.status) == (50, 1.25, JobStatus.PENDING)
    assert updated.updated_at == T0 + timedelta(seconds=60)


def test_append_event_keeps_order(store):
    job = store.create(request(), now=T0)
    for i in range(3):
        store.append_event(job.id, JobEvent(at=T0 + timedelta(seconds=i), kind="progress", data={"step": i}))
    events = store.get(job.id).events
    assert [e.data.get("step") for e in events[1:]] == [0, 1, 2]


def test_embedded_store_persists_across_reopen(tmp_path):
    from blocks.stores import open_job_store

    job = open_job_store(Settings(home=tmp_path)).create(request(idempotency_key="k"), now=T0)
    reopened = open_job_store(Settings(home=tmp_path))
    assert reopened.get(job.id).request.idempotency_key == "k"


def test_store_accepts_a_database_and_no_lock(tmp_path):
    """JobStore itself only needs a pymongo-style Database."""
    embedded = open_embedded_database(tmp_path / "db")
    store = JobStore(embedded.database)
    assert store.get(store.create(request(), now=T0).id).status is JobStatus.PENDING


def test_threads_of_one_process_share_an_embedded_store(tmp_path):
    """A flow's tasks and its caller use one store from several threads; montydb keeps its current
    SQLite connection in one shared attribute, so without a client per thread a thread can get
    another's connection and sqlite3 refuses it."""
    import threading

    from blocks.stores import open_job_store

    store = open_job_store(Settings(home=tmp_path))
    job = store.create(request(idempotency_key="threads"), now=T0)
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def reader():
        start.wait()
        try:
            for _ in range(60):
                assert store.get(job.id).id == job.id
        except BaseException as exc:  # reported below, with the thread's error
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


WORKER = textwrap.dedent("""
    import json, sys, time
    from datetime import UTC, datetime
    from spotshift.models import JobCreate, JobEvent, JobStatus
    from spotshift.settings import Settings
    from blocks.stores import open_job_store
    from spotshift.stores import InvalidTransition

    name, start_at, job_ids, events = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
    store = open_job_store(Settings())
    now = datetime(2030, 1, 1, tzinfo=UTC)
    req = JobCreate(model="gpt2", dataset="s3://spotshift-data/c.txt", max_steps=10, budget_usd=1,
                    deadline=datetime(2099, 1, 1, tzinfo=UTC), idempotency_key="shared-submission")
    while time.time() < start_at:
        time.sleep(0.005)
    won, refused = [], []
    created = store.create(req, now=now).id
    for i in range(events):
        for job_id in job_ids:
            store.append_event(job_id, JobEvent(at=now, kind="ping", message=name, data={"i": i}))
            if i == events // 2:
                try:
                    store.transition(job_id, JobStatus.PLANNING, now=now, message=name)
                    won.append(job_id)
                except InvalidTransition as e:
                    refused.append([job_id, e.current.value])
    print(json.dumps({"created": created, "won": won, "refused": refused}))
""")


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_processes_writing_at_once_lose_nothing(backend, tmp_path):
    """A flow run and the scout write the same jobs at once: every event kept, each move made once."""
    import time

    settings = _settings_for(backend, tmp_path)
    from blocks.stores import open_job_store

    store = open_job_store(settings)
    job_ids = [store.create(request(), now=T0).id for _ in range(4)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTSHIFT_")}
    env.update(SPOTSHIFT_HOME=str(tmp_path), SPOTSHIFT_MONGODB_DATABASE=settings.mongodb_database, PYTHONPATH=str(REPO))
    if settings.mongodb_url is not None:
        env["SPOTSHIFT_MONGODB_URL"] = settings.mongodb_url.get_secret_value()
    events = 12
    start_at = time.time() + 2.0  # both interpreters are up by then; then they race
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, name, str(start_at), json.dumps(job_ids), str(events)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("flow", "scout")]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))

    assert results[0]["created"] == results[1]["created"], "one submission, one job"
    assert len(store.list()) == len(job_ids) + 1
    won = results[0]["won"] + results[1]["won"]
    assert sorted(won) == sorted(job_ids), "each pending->planning move made exactly once"
    assert all(current == "planning" for _, current in results[0]["refused"] + results[1]["refused"])
    for job_id in job_ids:
        job = store.get(job_id)
        assert job.status is JobStatus.PLANNING
        pings = [e for e in job.events if e.kind == "ping"]
        assert len(pings) == 2 * events
        assert {(e.message, e.data["i"]) for e in pings} == {(n, i) for n in ("flow", "scout") for i in range(events)}
        assert len([e for e in job.events if e.kind == "status"]) == 1


def test_a_job_whose_local_model_folder_is_gone_still_reads_back(store, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    job = store.create(request(model=str(model_dir)), now=T0)
    model_dir.rmdir()
    assert store.get(job.id).request.model == str(model_dir)
    assert [j.id for j in store.list()] == [job.id]


def test_a_fresh_embedded_store_has_every_collection_before_anyone_reads(tmp_path):
    """montydb makes a collection's file before its table; a reader in another process must not
    find the file without the table (it would fail with "no such table")."""
    import sqlite3

    from spotshift.stores.embedded import COLLECTIONS, open_embedded_database

    open_embedded_database(tmp_path / "store")
    for collection in COLLECTIONS:
        files = list((tmp_path / "store").rglob(f"{collection}.collection"))
        assert len(files) == 1, collection
        with sqlite3.connect(files[0]) as conn:
            assert conn.execute("select count(*) from sqlite_master where type='table'").fetchone()[0] >= 1
