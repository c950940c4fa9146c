"""The migration state machine (spotshift.lifecycle.migration): the allowed steps and only those,
the fields each state implies, what an adopting run rolls a migration in flight forward to, rows
stored before the state existed, and both ledgers (the embedded store, PostgreSQL with the
supabase/migrations schema) keeping the state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spotshift.lifecycle.migration import (
    ENTRY_STATES, TRANSITIONS, IllegalMigrationStep, advance, begin, roll_forward,
)
from spotshift.models import Market, Migration, MigrationReason, MigrationState, Workload
from tests.pg import PostgresUnavailable, running_postgres
# the embedded ledger (and MongoDB when configured); SupabaseLedger over recorded PostgREST replies
from tests.test_ledger import ledger, supabase  # noqa: F401

S = MigrationState
T0 = datetime(2030, 1, 1, tzinfo=UTC)
M = timedelta(minutes=1)
H = timedelta(hours=1)
ALL_STEPS = [(a, b) for a in S for b in S]
ALLOWED = [(a, b) for a, b in ALL_STEPS if b in TRANSITIONS[a]]
ILLEGAL = [(a, b) for a, b in ALL_STEPS if b not in TRANSITIONS[a]]
IN_FLIGHT = [s for s in S if not s.terminal]


def wl(wid: str, start: datetime = T0) -> Workload:
    return Workload(id=wid, job_id="job-1", plan_id="plan-1", instance_id=f"i-{wid}", instance_type="p3.2xlarge",
                    region="us-east-1", zone="us-east-1a", market=Market.SPOT, usd_per_hour=0.9, started_at=start)


OLD = wl("wl-old", T0 - 60 * M)


def at_state(state: MigrationState) -> Migration:
    """A migration begun at T0 that reached `state` the legal way (a step a minute)."""
    m = begin("job-1", OLD, MigrationReason.CHEAPER, at=T0, expected_saving_usd=2.5)
    path = {S.REQUESTED: [], S.CHECKPOINTED: [S.CHECKPOINTED], S.ABANDONED: [S.ABANDONED],
            S.LAUNCHED: [S.CHECKPOINTED, S.LAUNCHED], S.ROLLED_BACK: [S.CHECKPOINTED, S.ROLLED_BACK],
            S.FIRST_STEP_SEEN: [S.CHECKPOINTED, S.LAUNCHED, S.FIRST_STEP_SEEN],
            S.OLD_STOPPED: [S.CHECKPOINTED, S.LAUNCHED, S.FIRST_STEP_SEEN, S.OLD_STOPPED],
            S.RECORDED: [S.CHECKPOINTED, S.LAUNCHED, S.FIRST_STEP_SEEN, S.OLD_STOPPED, S.RECORDED]}[state]
    for k, to in enumerate(path, start=1):
        m = advance(m, to, at=T0 + k * M, **_needs(to))
    assert m.state is state
    return m


def _needs(to: MigrationState, new: str = "wl-new") -> dict:
    return {S.CHECKPOINTED: {"checkpoint_step": 40}, S.LAUNCHED: {"to_workload_id": new}}.get(to, {})


# --- the steps ------------------------------------------------------------------------------------


def test_the_states_and_which_are_final():
    assert [s.value for s in S] == ["requested", "checkpointed", "launched", "first_step_seen", "old_stopped",
                                    "recorded", "abandoned", "rolled_back"]
    assert {s for s in S if s.terminal} == {S.RECORDED, S.ABANDONED, S.ROLLED_BACK}
    assert all(TRANSITIONS[s] == frozenset() for s in S if s.terminal)
    assert ENTRY_STATES == {S.REQUESTED, S.CHECKPOINTED}


def test_the_allowed_steps_are_exactly_these():
    assert set(ALLOWED) == {
        (S.REQUESTED, S.CHECKPOINTED), (S.REQUESTED, S.ABANDONED),
        (S.CHECKPOINTED, S.LAUNCHED), (S.CHECKPOINTED, S.ROLLED_BACK),
        (S.LAUNCHED, S.LAUNCHED), (S.LAUNCHED, S.FIRST_STEP_SEEN), (S.LAUNCHED, S.ROLLED_BACK),
        (S.FIRST_STEP_SEEN, S.OLD_STOPPED), (S.FIRST_STEP_SEEN, S.RECORDED),
        (S.OLD_STOPPED, S.RECORDED)}


@pytest.mark.parametrize("current, to", ALLOWED, ids=[f"{a.value}->{b.value}" for a, b in ALLOWED])
def test_every_allowed_step_is_taken(current, to):
    m = at_state(current)
    moved = advance(m, to, at=T0 + 10 * M, **_needs(to, new="wl-newer"))
    assert moved.state is to and moved.id == m.id
    assert (moved.job_id, moved.from_workload_id, moved.reason, moved.expected_saving_usd, moved.started_at) == (
        "job-1", OLD.id, MigrationReason.CHEAPER, 2.5, T0)
    assert m.state is current  # a new row; the old one is unchanged


@pytest.mark.parametrize("current, to", ILLEGAL, ids=[f"{a.value}->{b.value}" for a, b in ILLEGAL])
def test_every_other_step_raises_naming_the_allowed_ones(current, to):
    m = at_state(current)
    with pytest.raises(IllegalMigrationStep) as err:
        advance(m, to, at=T0 + 10 * M, **_needs(to, new="wl-newer"))
    e = err.value
    assert isinstance(e, ValueError)
    assert (e.migration_id, e.from_state, e.to) == (m.id, current, to)
    assert set(e.allowed) == TRANSITIONS[current]
    msg = str(e)
    assert f"from {current.value} to {to.value}" in msg
    assert all(s.value in msg.split(";")[1] for s in TRANSITIONS[current])
    if current.terminal:
        assert "final" in msg


def test_the_message_lists_the_allowed_states_in_order():
    with pytest.raises(IllegalMigrationStep, match="cannot go from launched to old_stopped; from launched it "
                                                   "may go to launched, first_step_seen, rolled_back$"):
        advance(at_state(S.LAUNCHED), S.OLD_STOPPED, at=T0 + 10 * M)


# --- the fields each state implies ---------------------------------------------------------------


@pytest.mark.parametrize("state", list(S), ids=[s.value for s in S])
def test_a_migration_is_finished_only_in_a_final_state(state):
    m = at_state(state)
    if state.terminal:
        assert m.finished_at is not None and m.succeeded is (state is S.RECORDED)
    else:
        assert m.finished_at is None and m.succeeded is None


def test_a_move_step_by_step():
    m = begin("job-1", OLD, MigrationReason.CHEAPER, at=T0, expected_saving_usd=2.5)
    assert (m.state, m.to_workload_id, m.checkpoint_step, m.downtime_seconds) == (S.REQUESTED, None, None, None)
    m = advance(m, S.CHECKPOINTED, at=T0 + M, checkpoint_step=40)
    assert m.checkpoint_step == 40 and m.to_workload_id is None
    m = advance(m, S.LAUNCHED, at=T0 + 2 * M, to_workload_id="wl-new")
    assert (m.to_workload_id, m.checkpoint_step, m.downtime_seconds) == ("wl-new", 40, None)
    m = advance(m, S.FIRST_STEP_SEEN, at=T0 + 5 * M)
    assert m.downtime_seconds == 300 and m.finished_at is None and m.succeeded is None  # from its start to the step
    m = advance(m, S.OLD_STOPPED, at=T0 + 6 * M)
    assert m.downtime_seconds == 300
    done = advance(m, S.RECORDED, at=T0 + 5 * M)
    # the row the flows wrote before the state machine (plans.migration_row): finished at the first step
    assert done.model_dump(exclude={"id", "state"}) == dict(
        job_id="job-1", from_workload_id=OLD.id, to_workload_id="wl-new", reason=MigrationReason.CHEAPER,
        expected_saving_usd=2.5, checkpoint_step=40, downtime_seconds=300.0, started_at=T0,
        finished_at=T0 + 5 * M, succeeded=True)


def test_a_recovery_begins_checkpointed_relaunches_and_is_recorded_without_stopping_the_old():
    m = begin("job-1", OLD, MigrationReason.PREEMPTED, at=T0, state=S.CHECKPOINTED)
    assert m.state is S.CHECKPOINTED and m.checkpoint_step is None and m.expected_saving_usd == 0
    m = advance(m, S.LAUNCHED, at=T0 + M, to_workload_id="wl-a", checkpoint_step=30)
    m = advance(m, S.LAUNCHED, at=T0 + 3 * M, to_workload_id="wl-b", checkpoint_step=30)  # wl-a never trained
    assert m.to_workload_id == "wl-b"
    m = advance(advance(m, S.FIRST_STEP_SEEN, at=T0 + 4 * M), S.RECORDED, at=T0 + 4 * M)
    assert (m.state, m.succeeded, m.finished_at, m.downtime_seconds) == (S.RECORDED, True, T0 + 4 * M, 240)


@pytest.mark.parametrize("end, current", [(S.ABANDONED, S.REQUESTED), (S.ROLLED_BACK, S.CHECKPOINTED),
                                          (S.ROLLED_BACK, S.LAUNCHED)])
def test_a_failed_migration_is_finished_and_not_succeeded(end, current):
    m = at_state(current)
    failed = advance(m, end, at=T0 + 9 * M)
    assert (failed.succeeded, failed.finished_at, failed.downtime_seconds) == (False, T0 + 9 * M, None)
    assert failed.to_workload_id == m.to_workload_id and failed.checkpoint_step == m.checkpoint_step


def test_steps_refuse_what_would_leave_the_row_inconsistent():
    requested, launched = at_state(S.REQUESTED), at_state(S.LAUNCHED)
    with pytest.raises(ValueError, match="checkpointed needs the checkpoint's step"):
        advance(requested, S.CHECKPOINTED, at=T0 + M)
    with pytest.raises(ValueError, match="launched needs the new workload"):
        advance(at_state(S.CHECKPOINTED), S.LAUNCHED, at=T0 + M)
    with pytest.raises(ValueError, match="a re-launch needs a new workload"):
        advance(launched, S.LAUNCHED, at=T0 + 9 * M, to_workload_id=launched.to_workload_id)
    with pytest.raises(ValueError, match="the one it moves from"):
        advance(at_state(S.CHECKPOINTED), S.LAUNCHED, at=T0 + M, to_workload_id=OLD.id)
    with pytest.raises(ValueError, match="before it began"):
        advance(requested, S.ABANDONED, at=T0 - M)
    with pytest.raises(ValueError, match="begins checkpointed or requested, not launched"):
        begin("job-1", OLD, MigrationReason.CHEAPER, at=T0, state=S.LAUNCHED)


# --- roll_forward: an adopting run's verdict on a migration in flight ------------------------------


@pytest.mark.parametrize("state", [S.LAUNCHED, S.FIRST_STEP_SEEN, S.OLD_STOPPED], ids=lambda s: s.value)
def test_the_kept_workload_is_the_target_recorded(state):
    m = at_state(state)
    done = roll_forward(m, wl("wl-new", T0 + 2 * M), at=T0 + H)
    assert (done.state, done.succeeded, done.finished_at, done.to_workload_id) == (S.RECORDED, True, T0 + H, "wl-new")
    assert done.downtime_seconds == m.downtime_seconds


def test_a_target_not_recorded_yet_is_the_kept_workload_started_after_the_migration_began():
    # the crash came between the new instance's start and the `launched` step
    done = roll_forward(at_state(S.CHECKPOINTED), wl("wl-new", T0 + 2 * M), at=T0 + H)
    assert (done.state, done.to_workload_id, done.succeeded) == (S.RECORDED, "wl-new", True)


@pytest.mark.parametrize("state, kept, end", [
    (S.REQUESTED, OLD, S.ABANDONED),  # the old trainer never checkpointed: it goes on
    (S.REQUESTED, None, S.ABANDONED),
    (S.CHECKPOINTED, OLD, S.ROLLED_BACK),  # the source is never the target
    (S.CHECKPOINTED, None, S.ROLLED_BACK),  # nothing trains: the job resumes elsewhere
    (S.CHECKPOINTED, wl("wl-earlier", T0 - M), S.ROLLED_BACK),  # started before the migration began
    (S.LAUNCHED, wl("wl-other", T0 + 5 * M), S.ROLLED_BACK),  # its target is another workload
    (S.LAUNCHED, None, S.ROLLED_BACK),
    (S.FIRST_STEP_SEEN, None, S.ROLLED_BACK),
], ids=lambda v: v.value if isinstance(v, S) else getattr(v, "id", "none"))
def test_otherwise_it_is_rolled_back_or_abandoned_before_its_checkpoint(state, kept, end):
    m = at_state(state)
    gone = roll_forward(m, kept, at=T0 + H)
    assert (gone.state, gone.succeeded, gone.finished_at) == (end, False, T0 + H)
    assert gone.to_workload_id == m.to_workload_id


@pytest.mark.parametrize("state", [s for s in S if s.terminal], ids=lambda s: s.value)
def test_a_finished_migration_is_left_as_it_is(state):
    m = at_state(state)
    assert roll_forward(m, wl("wl-new", T0 + 2 * M), at=T0 + H) == m


# --- rows stored before the state existed ---------------------------------------------------------


@pytest.mark.parametrize("succeeded, state", [(True, S.RECORDED), (False, S.ROLLED_BACK), (None, S.REQUESTED)])
def test_an_older_row_without_a_state_loads_with_the_state_it_ended_in(succeeded, state):
    row = {"id": "mig-1", "job_id": "job-1", "from_workload_id": "wl-1", "to_workload_id": "wl-2",
           "reason": "cheaper", "expected_saving_usd": 1.0, "checkpoint_step": 10, "downtime_seconds": None,
           "started_at": "2030-01-01T00:00:00Z", "finished_at": None if succeeded is None else "2030-01-01T00:05:00Z",
           "succeeded": succeeded}
    assert Migration.model_validate(row).state is state
    assert Migration.model_validate({**row, "state": None}).state is state
    assert Migration.model_validate({**row, "state": "launched"}).state is S.LAUNCHED  # a stored state wins


def test_an_unknown_state_is_refused_naming_the_states():
    with pytest.raises(ValueError, match="'requested', 'checkpointed', 'launched'"):
        Migration(job_id="job-1", from_workload_id="wl-1", reason="cheaper", started_at=T0, state="paused")


# --- both ledgers keep the state ------------------------------------------------------------------


def test_the_embedded_ledger_keeps_every_state(ledger):  # noqa: F811
    for state in S:
        m = at_state(state).model_copy(update={"id": f"mig-{state.value}"})
        ledger.upsert_migration(m)
        assert next(x for x in ledger.migrations("job-1") if x.id == m.id) == m
    m = at_state(S.REQUESTED)
    for step in (at_state(S.CHECKPOINTED), at_state(S.LAUNCHED), at_state(S.RECORDED)):  # one row, moved forward
        ledger.upsert_migration(step.model_copy(update={"id": m.id}))
        assert [x.state for x in ledger.migrations("job-1") if x.id == m.id] == [step.state]


def test_the_embedded_ledger_reads_a_document_stored_before_the_state(tmp_path):
    from blocks.stores import open_ledger
    from spotshift.settings import Settings
    from spotshift.stores.ledger import migration_row

    store = open_ledger(Settings(home=tmp_path))
    old = {k: v for k, v in migration_row(at_state(S.RECORDED)).items() if k != "state"}
    store._upsert("migrations", old)  # as written before this change
    [m] = store.migrations("job-1")
    assert m.state is S.RECORDED and m.succeeded is True


def test_the_supabase_ledger_sends_and_reads_the_state(supabase):  # noqa: F811 - the imported fixture
    import json

    import httpx

    from spotshift.stores.ledger import migration_row

    client, router = supabase
    m = at_state(S.FIRST_STEP_SEEN)
    sent = router.post("/migrations", params={"on_conflict": "id"}).mock(return_value=httpx.Response(201, json=[]))
    client.upsert_migration(m)
    assert json.loads(sent.calls.last.request.content)["state"] == "first_step_seen"
    router.get("/migrations").mock(return_value=httpx.Response(200, json=[migration_row(m)]))
    assert client.migrations("job-1") == [m]


SQL = sorted((Path(__file__).resolve().parents[1] / "supabase" / "migrations").glob("*.sql"))
STATE_SQL = next(p for p in SQL if p.name == "20261206000000_migration_state.sql")


@pytest.fixture(scope="module")
def pg_url():
    pytest.importorskip("psycopg", reason="psycopg (dev extra) is needed to talk to PostgreSQL")
    try:
        with running_postgres() as url:
            yield url
    except PostgresUnavailable as e:
        pytest.skip(f"no PostgreSQL for the SQL tests: {e}")


def _database(pg_url: str, name: str):
    import psycopg

    from tests.test_supabase_sql import ROLES

    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f"create database {name}")
    conn = psycopg.connect(pg_url.rsplit("/", 1)[0] + "/" + name, autocommit=True)
    if conn.execute("select count(*) from pg_roles where rolname = 'service_role'").fetchone()[0] == 0:
        conn.execute(ROLES)
    return conn


def _ledger_rows(conn):
    """The job's workload rows the migrations refer to (foreign keys)."""
    from tests.test_supabase_sql import records, upsert
    from spotshift.stores.ledger import plan_row, workload_row

    plan, old, new, _ = records()
    upsert(conn, "plans", plan_row(plan))
    for w in (old, new):
        upsert(conn, "workloads", workload_row(w))
    return old, new


def test_postgresql_keeps_every_state_and_refuses_an_unknown_one(pg_url):
    import psycopg

    from spotshift.stores.ledger import migration_row
    from tests.test_supabase_sql import select, upsert

    with _database(pg_url, f"s_{datetime.now().strftime('%H%M%S%f')}") as conn:
        for sql in SQL:
            conn.execute(sql.read_text())
        old, new = _ledger_rows(conn)
        rows = [at_state(s).model_copy(update={"id": f"mig-{k}", "from_workload_id": old.id,
                                               "to_workload_id": new.id if s in (
                                                   S.LAUNCHED, S.FIRST_STEP_SEEN, S.OLD_STOPPED, S.RECORDED) else None})
                for k, s in enumerate(S)]
        conn.execute("set role service_role")
        for m in rows:
            upsert(conn, "migrations", migration_row(m))
        moved = advance(rows[0], S.CHECKPOINTED, at=T0 + M, checkpoint_step=40)
        upsert(conn, "migrations", migration_row(moved))  # the same row, a step on
        conn.execute("reset role")
        conn.execute("set role authenticated")
        assert [Migration.model_validate(r) for r in select(conn, "migrations", "id")] == [moved, *rows[1:]]
        conn.execute("reset role")
        with pytest.raises(psycopg.errors.CheckViolation):
            upsert(conn, "migrations", migration_row(rows[0]) | {"state": "paused"})
        conn.execute(STATE_SQL.read_text())  # run again: it changes nothing

        assert [r["state"] for r in select(conn, "migrations", "id")] == [m.state.value for m in [moved, *rows[1:]]]


def test_postgresql_rows_stored_before_the_state_get_the_state_they_ended_in(pg_url):
    from spotshift.stores.ledger import migration_row
    from tests.test_supabase_sql import select, upsert

    [init, *later] = SQL
    assert init.name.endswith("_init.sql") and "20261206000000_migration_state.sql" in [p.name for p in later]
    with _database(pg_url, f"s_{datetime.now().strftime('%H%M%S%f')}") as conn:
        conn.execute(init.read_text())
        old, new = _ledger_rows(conn)
        before = {"mig-a": True, "mig-b": False, "mig-c": None}
        for mid, ok in before.items():
            row = migration_row(Migration(id=mid, job_id="job-1", from_workload_id=old.id, to_workload_id=new.id,
                                          reason=MigrationReason.CHEAPER, started_at=T0,
                                          finished_at=None if ok is None else T0 + M, succeeded=ok))
            upsert(conn, "migrations", {k: v for k, v in row.items() if k != "state"})
        for sql in later:
            conn.execute(sql.read_text())
        assert {r["id"]: r["state"] for r in select(conn, "migrations", "id")} == {
            "mig-a": "recorded", "mig-b": "rolled_back", "mig-c": "requested"}
        assert [Migration.model_validate(r).state for r in select(conn, "migrations", "id")] == [
            S.RECORDED, S.ROLLED_BACK, S.REQUESTED]
