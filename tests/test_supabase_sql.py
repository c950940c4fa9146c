"""supabase/migrations/*_init.sql on a real PostgreSQL: tables, keys, RLS policies, ledger rows round-trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg (dev extra) is needed to talk to PostgreSQL")
from psycopg.types.json import Jsonb  # noqa: E402

from spotshift.models import EndReason, Market, Migration, MigrationReason, Offer, Plan, Workload  # noqa: E402
from spotshift.stores.ledger import migration_row, plan_from_row, plan_row, workload_row  # noqa: E402
from tests.pg import PostgresUnavailable, running_postgres  # noqa: E402

MIGRATIONS = sorted((Path(__file__).resolve().parents[1] / "supabase" / "migrations").glob("*.sql"))
T0 = datetime(2030, 1, 1, tzinfo=UTC)
# Plain PostgreSQL lacks Supabase's API roles; create them as Supabase has them (no RLS bypass here,
# so the policies themselves are what let service_role write).
ROLES = "create role anon nologin; create role authenticated nologin; create role service_role nologin;"


@pytest.fixture(scope="module")
def pg_url():
    try:
        with running_postgres() as url:
            yield url
    except PostgresUnavailable as e:
        pytest.skip(f"no PostgreSQL for the SQL tests: {e}")


@pytest.fixture
def db(pg_url):
    """A fresh database with the migrations applied; a superuser connection in autocommit."""
    name = f"t_{datetime.now().strftime('%H%M%S%f')}"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f"create database {name}")
    url = pg_url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("select count(*) from pg_roles where rolname = 'service_role'").fetchone()[0] == 0:
            conn.execute(ROLES)
        for sql in MIGRATIONS:
            conn.execute(sql.read_text())
        yield conn


def offer(zone="us-east-1a", price=0.5) -> Offer:
    return Offer(instance_type="g5.xlarge", gpu="A10G", gpu_count=1, gpu_memory_gib=24, vcpus=4, memory_gib=16,
                 region="us-east-1", zone=zone, market=Market.SPOT, usd_per_hour=price, observed_at=T0,
                 source="replay")


def records():
    plan = Plan(id="plan-1", job_id="job-1", offer=offer(), expected_hours=2.0, expected_cost_usd=1.0,
                deadline_slack_hours=5.0, alternatives=[offer("us-east-1b", 0.6)], reason="cheapest", created_at=T0)
    old = Workload(id="wl-1", job_id="job-1", plan_id="plan-1", instance_id="i-1", instance_type="g5.xlarge",
                   region="us-east-1", zone="us-east-1a", market=Market.SPOT, usd_per_hour=0.5, started_at=T0,
                   ended_at=T0 + timedelta(hours=1), billed_seconds=3600, end_reason=EndReason.PREEMPTED)
    new = Workload(id="wl-2", job_id="job-1", plan_id="plan-1", instance_type="g5.xlarge", region="us-east-1",
                   zone="us-east-1b", market=Market.SPOT, usd_per_hour=0.6, started_at=T0 + timedelta(hours=1))
    move = Migration(id="mig-1", job_id="job-1", from_workload_id="wl-1", to_workload_id="wl-2",
                     reason=MigrationReason.PREEMPTED, expected_saving_usd=0.0, checkpoint_step=120,
                     downtime_seconds=95.5, started_at=T0 + timedelta(minutes=59), succeeded=True)
    return plan, old, new, move


def upsert(conn, table: str, row: dict) -> None:
    """What PostgREST runs for `upsert(row, on_conflict="id")`."""
    cols = list(row)
    values = [Jsonb(v) if isinstance(v, (dict, list)) else v for v in row.values()]
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != "id")
    conn.execute(f"insert into {table} ({', '.join(cols)}) values ({', '.join(['%s'] * len(cols))}) "
                 f"on conflict (id) do update set {updates}", values)


def select(conn, table: str, order: str) -> list[dict]:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()}
            for r in cur.execute(f"select * from {table} order by {order}").fetchall()]


def test_tables_have_rls_enabled_and_both_policies(db):
    rls = dict(db.execute("select relname, relrowsecurity from pg_class where relname in "
                          "('plans', 'workloads', 'migrations')").fetchall())
    assert rls == {"plans": True, "workloads": True, "migrations": True}
    policies = set(db.execute("select tablename, cmd, roles::text from pg_policies").fetchall())
    for table in ("plans", "workloads", "migrations"):
        assert (table, "ALL", "{service_role}") in policies
        assert (table, "SELECT", "{authenticated}") in policies


def test_ledger_rows_round_trip_as_service_role_write_and_authenticated_read(db):
    plan, old, new, move = records()
    db.execute("set role service_role")
    upsert(db, "plans", plan_row(plan))
    for w in (old, new):
        upsert(db, "workloads", workload_row(w))
    upsert(db, "migrations", migration_row(move))
    upsert(db, "workloads", workload_row(old))  # the same upsert again: still one row
    db.execute("reset role")
    db.execute("set role authenticated")
    assert [plan_from_row(r) for r in select(db, "plans", "id")] == [plan]
    assert [Workload.model_validate(r) for r in select(db, "workloads", "id")] == [old, new]
    assert [Migration.model_validate(r) for r in select(db, "migrations", "id")] == [move]
    db.execute("reset role")


def test_authenticated_users_cannot_write_and_anon_cannot_read(db):
    plan = records()[0]
    db.execute("set role authenticated")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        upsert(db, "plans", plan_row(plan))
    db.execute("reset role")
    db.execute("set role anon")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("select * from workloads")
    db.execute("reset role")


def test_foreign_keys_refuse_a_migration_from_an_unknown_workload(db):
    move = records()[3]
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        upsert(db, "migrations", migration_row(move))


def test_check_constraints_refuse_an_unknown_market(db):
    row = workload_row(records()[1]) | {"plan_id": None, "market": "reserved"}
    with pytest.raises(psycopg.errors.CheckViolation):
        upsert(db, "workloads", row)
