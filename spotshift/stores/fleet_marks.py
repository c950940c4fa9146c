"""What the fleet pass remembers between passes (per job: the heartbeat's ETag, the last sign of life,
the rate meter), as one document in the job store's database: a pass may run in a fresh process."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Any, Mapping

from spotshift.fleet import FleetMark
from spotshift.monitoring import RateMeter
from training.contract import Progress

COLLECTION = "fleet_marks"
DOCUMENT_ID = "fleet"  # one document: one read and one write per pass (the fleet runs one pass at a time)


class FleetMarkStore:
    """The marks of every running job, read and replaced whole by the pass (concurrency 1)."""

    def __init__(self, database, *, write_lock: AbstractContextManager | None = None):
        self._marks = database[COLLECTION]
        self._lock = write_lock if write_lock is not None else nullcontext()

    def load(self) -> dict[str, FleetMark]:
        doc = self._marks.find_one({"_id": DOCUMENT_ID})
        return {job_id: mark_from_doc(d) for job_id, d in (doc or {}).get("marks", {}).items()}

    def save(self, marks: Mapping[str, FleetMark]) -> None:
        """Replace the marks (jobs no longer running drop out)."""
        doc = {"_id": DOCUMENT_ID, "marks": {job_id: mark_doc(m) for job_id, m in marks.items()}}
        with self._lock:
            self._marks.replace_one({"_id": DOCUMENT_ID}, doc, upsert=True)


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _at(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def mark_doc(mark: FleetMark) -> dict[str, Any]:
    m = mark.meter
    return {"workload_id": mark.workload_id, "last_sign_of_life": _iso(mark.last_sign_of_life), "etag": mark.etag,
            "progress": mark.progress.model_dump(mode="json") if mark.progress is not None else None,
            "last_beat": _iso(mark.last_beat), "listed": mark.listed,
            "meter": {"first_step": m.first_step, "first_at": _iso(m.first_at), "last_step": m.last_step,
                      "last_at": _iso(m.last_at)}}


def mark_from_doc(doc: Mapping[str, Any]) -> FleetMark:
    meter = doc.get("meter") or {}
    return FleetMark(workload_id=doc["workload_id"], last_sign_of_life=_at(doc["last_sign_of_life"]),
                     etag=doc.get("etag"),
                     progress=Progress.model_validate(doc["progress"]) if doc.get("progress") else None,
                     last_beat=_at(doc.get("last_beat")), listed=bool(doc.get("listed", False)),
                     meter=RateMeter(first_step=meter.get("first_step"), first_at=_at(meter.get("first_at")),
                                     last_step=meter.get("last_step"), last_at=_at(meter.get("last_at"))))
