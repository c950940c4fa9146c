"""JobStore: jobs and their state machine, written once against the pymongo API (MongoDB or montydb)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from typing import Any, Iterable, Mapping, Protocol, runtime_checkable

from pymongo import ASCENDING, ReturnDocument, UpdateOne
from pymongo.collection import Collection

from spotshift.models import ALLOWED_TRANSITIONS, Job, JobCreate, JobEvent, JobStatus, JobUpdate, new_id
from spotshift.stores.embedded import DUPLICATE_KEY_ERRORS, PerThreadCollection
from spotshift.stores.errors import InvalidTransition, JobIdConflict, JobNotFound

# Stored jobs are re-read long after submission: judge their deadline against the epoch, not today.
# "stored" tells validators this is a re-read, so checks that only hold at submission time (a local
# model directory still existing) can be skipped once models.py honours it.
_STORED = {"now": datetime(1970, 1, 1, tzinfo=UTC), "stored": True}
_TRANSITION_ATTEMPTS = 3


def _predecessors(to: JobStatus) -> list[str]:
    """Every status from which the state machine allows a move to `to`."""
    return sorted(s.value for s, targets in ALLOWED_TRANSITIONS.items() if to in targets)


@runtime_checkable
class Jobs(Protocol):
    """What flows, tasks and the CLI use of a job store (JobStore below is the one implementation:
    MongoDB or the embedded store)."""

    def get(self, job_id: str) -> Job: ...
    def list(self, status: JobStatus | Iterable[JobStatus] | None = None) -> list[Job]: ...
    def find_by_idempotency_key(self, key: str | None) -> Job | None: ...
    def create(self, request: JobCreate, *, now: datetime, job_id: str | None = None) -> Job: ...
    def transition(self, job_id: str, to: JobStatus, *, now: datetime, update: JobUpdate | None = None,
                   message: str = "") -> Job: ...
    def update(self, job_id: str, update: JobUpdate, *, now: datetime) -> Job: ...
    def update_many(self, updates: Mapping[str, JobUpdate], *, now: datetime) -> int: ...
    def append_event(self, job_id: str, event: JobEvent) -> None: ...


class JobStore:
    """Jobs in one collection (`jobs`), one document per job, `_id` = job id.

    `database` is a pymongo Database or the embedded montydb one; `write_lock` (the embedded
    store's cross-process lock) is held around every write. Status changes are single
    find_one_and_update calls filtered on the allowed predecessor statuses, so a move the state
    machine forbids can never be written, however many processes race.
    """

    def __init__(self, database, *, write_lock: AbstractContextManager | None = None):
        self._jobs = database["jobs"]
        self._lock = write_lock if write_lock is not None else nullcontext()
        with self._lock:
            self._jobs.create_index(
                "idempotency_key", unique=True, partialFilterExpression={"idempotency_key": {"$type": "string"}}
            )
            self._jobs.create_index([("status", ASCENDING), ("created_at", ASCENDING)])

    # --- reads ------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        doc = self._jobs.find_one({"_id": job_id})
        if doc is None:
            raise JobNotFound(job_id)
        return _load(doc)

    def list(self, status: JobStatus | Iterable[JobStatus] | None = None) -> list[Job]:
        """Jobs, oldest first; only those in `status` (one or several) when given."""
        query: dict[str, Any] = {}
        if status is not None:
            wanted = [status] if isinstance(status, (JobStatus, str)) else list(status)
            query["status"] = {"$in": [JobStatus(s).value for s in wanted]}
        docs = self._jobs.find(query).sort([("created_at", ASCENDING), ("_id", ASCENDING)])
        return [_load(d) for d in docs]

    def find_by_idempotency_key(self, key: str | None) -> Job | None:
        """The job submitted with `key`, if any (submit asks before uploading a job's local inputs)."""
        doc = self._jobs.find_one({"idempotency_key": key}) if key is not None else None
        return _load(doc) if doc is not None else None

    # --- writes -----------------------------------------------------------------------------

    def create(self, request: JobCreate, *, now: datetime, job_id: str | None = None) -> Job:
        """A new pending job; the same idempotency key twice gives back the first job."""
        key = request.idempotency_key
        job = Job(
            id=job_id or new_id("job"), request=request, created_at=now, updated_at=now,
            idempotency_key=key, events=[JobEvent(at=now, kind="created")],
        )
        with self._lock:
            if key is not None and (existing := self._jobs.find_one({"idempotency_key": key})) is not None:
                return _load(existing)
            try:
                self._jobs.insert_one(_dump(job))
            except DUPLICATE_KEY_ERRORS:
                if key is not None and (existing := self._jobs.find_one({"idempotency_key": key})) is not None:
                    return _load(existing)  # lost a race against the same submission (real MongoDB)
                raise JobIdConflict(job.id) from None
        return job

    def transition(
        self, job_id: str, to: JobStatus, *, now: datetime, update: JobUpdate | None = None, message: str = ""
    ) -> Job:
        """Move the job to `to` atomically, applying `update`; InvalidTransition if not allowed now."""
        to = JobStatus(to)
        changes = {**(update.changes() if update else {}), "status": to.value, "updated_at": _iso(now)}
        event = JobEvent(at=now, kind="status", message=message, data={"to": to.value})
        for _ in range(_TRANSITION_ATTEMPTS):
            with self._lock:
                doc = self._jobs.find_one_and_update(
                    {"_id": job_id, "status": {"$in": _predecessors(to)}},
                    {"$set": changes, "$push": {"events": event.model_dump(mode="json")}},
                    return_document=ReturnDocument.AFTER,
                )
            if doc is not None:
                return _load(doc)
            current = self.get(job_id).status
            if to not in ALLOWED_TRANSITIONS[current]:
                raise InvalidTransition(job_id, current, to)
            # the status changed between our write and our read: try again against the new one
        raise InvalidTransition(job_id, self.get(job_id).status, to)

    def update(self, job_id: str, update: JobUpdate, *, now: datetime) -> Job:
        """Apply the non-None fields of `update` (progress, cost, ...) without touching the status."""
        with self._lock:
            doc = self._jobs.find_one_and_update(
                {"_id": job_id},
                {"$set": {**update.changes(), "updated_at": _iso(now)}},
                return_document=ReturnDocument.AFTER,
            )
        if doc is None:
            raise JobNotFound(job_id)
        return _load(doc)

    def update_many(self, updates: Mapping[str, JobUpdate], *, now: datetime) -> int:
        """Apply each job's non-None fields (a fleet pass's measurements) without reading the jobs
        back: one bulk write on MongoDB; on the embedded store one scan and one SQLite transaction
        (its update_one scans the collection once per job). Returns the jobs matched."""
        sets = {job_id: {**u.changes(), "updated_at": _iso(now)} for job_id, u in updates.items()}
        if not sets:
            return 0
        with self._lock:
            if isinstance(self._jobs, PerThreadCollection):
                docs = list(self._jobs.find({"_id": {"$in": list(sets)}}))
                self._jobs.write_back([{**doc, **sets[doc["_id"]]} for doc in docs])
                return len(docs)
            if isinstance(self._jobs, Collection):
                return self._jobs.bulk_write([UpdateOne({"_id": k}, {"$set": v}) for k, v in sets.items()],
                                             ordered=False).matched_count
            return sum(self._jobs.update_one({"_id": k}, {"$set": v}).matched_count for k, v in sets.items())

    def append_event(self, job_id: str, event: JobEvent) -> None:
        with self._lock:
            result = self._jobs.update_one({"_id": job_id}, {"$push": {"events": event.model_dump(mode="json")}})
        if result.matched_count == 0:
            raise JobNotFound(job_id)


def _iso(at: datetime) -> str:
    """Timestamps are stored as UTC ISO-8601 strings: they sort and compare the same in both backends."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _dump(job: Job) -> dict[str, Any]:
    doc = job.model_dump(mode="json")
    doc["created_at"], doc["updated_at"] = _iso(job.created_at), _iso(job.updated_at)
    return {"_id": job.id, **doc}


def _load(doc: dict[str, Any]) -> Job:
    return Job.model_validate({k: v for k, v in doc.items() if k != "_id"}, context=_STORED)
