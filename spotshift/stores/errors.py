"""Typed errors of the job store and the ledger."""

from __future__ import annotations

from spotshift.models import ALLOWED_TRANSITIONS, JobStatus


class JobNotFound(LookupError):
    def __init__(self, job_id: str):
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class InvalidTransition(ValueError):
    """A status change the job state machine does not allow; carries the job's current status."""

    def __init__(self, job_id: str, current: JobStatus, requested: JobStatus):
        allowed = ", ".join(s.value for s in sorted(ALLOWED_TRANSITIONS[current], key=lambda s: s.value)) or "none"
        super().__init__(
            f"job {job_id!r} is {current.value}: cannot move to {requested.value} (allowed from {current.value}: {allowed})"
        )
        self.job_id = job_id
        self.current = current
        self.requested = requested


class JobIdConflict(ValueError):
    """A job id that is already taken by a different submission."""

    def __init__(self, job_id: str):
        super().__init__(f"job id {job_id!r} is already used by another submission")
        self.job_id = job_id
