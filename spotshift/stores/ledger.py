"""The ledger: plans, workloads and migrations, in Supabase (PostgREST) or the embedded store.

Writes are idempotent upserts on the records' ids; reads come back oldest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol, runtime_checkable


from spotshift.models import Migration, Plan, Workload

PLAN_COLUMNS = ("id", "job_id", "expected_hours", "expected_cost_usd", "deadline_slack_hours", "reason", "created_at")


@runtime_checkable
class Ledger(Protocol):
    def record_plan(self, plan: Plan) -> None: ...
    def upsert_workload(self, workload: Workload) -> None: ...
    def upsert_migration(self, migration: Migration) -> None: ...
    def plans(self, job_id: str) -> list[Plan]: ...
    def workloads(self, job_id: str) -> list[Workload]: ...
    def migrations(self, job_id: str) -> list[Migration]: ...
    def open_workloads(self, job_id: str | None = None) -> list[Workload]: ...

    def workloads_of(self, job_ids: Sequence[str]) -> dict[str, list[Workload]]: ...


# --- rows: the same shape in PostgreSQL and in the document store --------------------------------


def plan_row(plan: Plan) -> dict[str, Any]:
    """A plans row: the placement flattened into columns (for queries), the full offers as JSON."""
    offer = plan.offer
    return {
        **plan.model_dump(mode="json", include=set(PLAN_COLUMNS)),
        "instance_type": offer.instance_type,
        "region": offer.region,
        "zone": offer.zone,
        "market": offer.market.value,
        "usd_per_hour": offer.usd_per_hour,
        "offer": offer.model_dump(mode="json"),
        "alternatives": [o.model_dump(mode="json") for o in plan.alternatives],
    }


def plan_from_row(row: dict[str, Any]) -> Plan:
    return Plan.model_validate({k: row[k] for k in (*PLAN_COLUMNS, "offer", "alternatives")})


def workload_row(workload: Workload) -> dict[str, Any]:
    return workload.model_dump(mode="json")


def migration_row(migration: Migration) -> dict[str, Any]:
    """Every field, its state included (a row read back without one: see Migration)."""
    return migration.model_dump(mode="json")


# --- embedded ------------------------------------------------------------------------------------


class _RowWriter:
    """The ledger's writes, as idempotent upserts of rows on their ids; backends supply `_upsert`."""

    def _upsert(self, table: str, row: dict[str, Any]) -> None:
        raise NotImplementedError

    def record_plan(self, plan: Plan) -> None:
        self._upsert("plans", plan_row(plan))

    def upsert_workload(self, workload: Workload) -> None:
        self._upsert("workloads", workload_row(workload))

    def upsert_migration(self, migration: Migration) -> None:
        self._upsert("migrations", migration_row(migration))


class EmbeddedLedger(_RowWriter):
    """The ledger in the embedded document store (or any pymongo Database): one document per row."""

    def __init__(self, database, *, write_lock: AbstractContextManager | None = None):
        self._db = database
        self._lock = write_lock if write_lock is not None else nullcontext()

    def plans(self, job_id: str) -> list[Plan]:
        return [plan_from_row(r) for r in self._rows("plans", {"job_id": job_id}, "created_at")]

    def workloads(self, job_id: str) -> list[Workload]:
        return [Workload.model_validate(r) for r in self._rows("workloads", {"job_id": job_id}, "started_at")]

    def migrations(self, job_id: str) -> list[Migration]:
        return [Migration.model_validate(r) for r in self._rows("migrations", {"job_id": job_id}, "started_at")]

    def workloads_of(self, job_ids: Sequence[str]) -> dict[str, list[Workload]]:
        """Every workload of these jobs, by job, in one read (continuous-scout's many running jobs)."""
        return _by_job(job_ids, [Workload.model_validate(r) for r in
                                 self._rows("workloads", {"job_id": {"$in": list(job_ids)}}, "started_at")])

    def open_workloads(self, job_id: str | None = None) -> list[Workload]:
        query: dict[str, Any] = {"ended_at": None}
        if job_id is not None:
            query["job_id"] = job_id
        return [Workload.model_validate(r) for r in self._rows("workloads", query, "started_at")]

    def _upsert(self, collection: str, row: dict[str, Any]) -> None:
        with self._lock:
            self._db[collection].replace_one({"_id": row["id"]}, {"_id": row["id"], **row}, upsert=True)

    def _rows(self, collection: str, query: dict[str, Any], order_by: str) -> list[dict[str, Any]]:
        # sorted here: montydb's own sort is quadratic in the rows it returns
        docs = sorted(self._db[collection].find(query), key=lambda d: (str(d[order_by]), str(d["_id"])))
        return [{k: v for k, v in doc.items() if k != "_id"} for doc in docs]


# --- Supabase ------------------------------------------------------------------------------------


class SupabaseLedger(_RowWriter):
    """The ledger in Supabase tables (supabase/migrations/*.sql, applied in order) through supabase-py."""

    def __init__(self, client):
        self._client = client

    def plans(self, job_id: str) -> list[Plan]:
        rows = self._select("plans", "created_at").eq("job_id", job_id).execute().data
        return [plan_from_row(r) for r in rows]

    def workloads(self, job_id: str) -> list[Workload]:
        rows = self._select("workloads", "started_at").eq("job_id", job_id).execute().data
        return [Workload.model_validate(r) for r in rows]

    def migrations(self, job_id: str) -> list[Migration]:
        rows = self._select("migrations", "started_at").eq("job_id", job_id).execute().data
        return [Migration.model_validate(r) for r in rows]

    def workloads_of(self, job_ids: Sequence[str]) -> dict[str, list[Workload]]:
        rows = self._select("workloads", "started_at").in_("job_id", list(job_ids)).execute().data if job_ids else []
        return _by_job(job_ids, [Workload.model_validate(r) for r in rows])

    def open_workloads(self, job_id: str | None = None) -> list[Workload]:
        query = self._select("workloads", "started_at").is_("ended_at", "null")
        if job_id is not None:
            query = query.eq("job_id", job_id)
        return [Workload.model_validate(r) for r in query.execute().data]

    def _upsert(self, table: str, row: dict[str, Any]) -> None:
        self._client.table(table).upsert(row, on_conflict="id").execute()

    def _select(self, table: str, order_by: str):
        return self._client.table(table).select("*").order(order_by).order("id")


def _by_job(job_ids: Sequence[str], workloads: list[Workload]) -> dict[str, list[Workload]]:
    out: dict[str, list[Workload]] = {job_id: [] for job_id in job_ids}
    for w in workloads:
        out.setdefault(w.job_id, []).append(w)
    return out
