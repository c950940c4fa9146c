"""Reading a trainer's heartbeat: done, checkpointed, failed, stalled or still going, and how fast.

Pure: the caller passes the latest progress document (training.contract.Progress) and `now`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from training.contract import TrainerState


class Verdict(str, Enum):
    STARTING = "starting"  # no heartbeat from this instance yet
    TRAINING = "training"
    DONE = "done"
    CHECKPOINTED = "checkpointed"  # stopped cleanly after a checkpoint (request, SIGTERM, spot notice)
    FAILED = "failed"  # another attempt may work: the job resumes elsewhere (a few times)
    FAILED_PERMANENTLY = "failed_permanently"  # no restart can fix it (Progress.permanent): the job ends FAILED
    STALLED = "stalled"  # no fresh heartbeat for too long


class TrainerFailedPermanently(Exception):
    """The trainer failed in a way no restart, here or elsewhere, can fix (its heartbeat says
    permanent, exit code EXIT_PERMANENT): the job ends FAILED with this message, launched nowhere again."""

    def __init__(self, message: str, instance_id: str | None = None):
        super().__init__(message)
        self.instance_id = instance_id


def permanent_failure(progress: Any, instance_id: str | None = None) -> str | None:
    """The trainer's reason when its heartbeat (of `instance_id`, if given) reports a failure no
    restart can fix; None for anything else (training, a failure another attempt may fix, ...)."""
    if progress is None or (instance_id is not None and progress.instance_id != instance_id):
        return None
    if TrainerState(progress.state) is not TrainerState.failed or not getattr(progress, "permanent", False):
        return None
    return progress.error or "the trainer failed permanently without a reason"


def assess(progress: Any, *, instance_id: str, now: datetime, last_sign_of_life: datetime,
           stall_seconds: float, first_heartbeat_seconds: float | None = None) -> Verdict:
    """What the instance's trainer is doing. Only a heartbeat that names this instance counts (the
    previous instance wrote to the same prefix). `last_sign_of_life` is when the caller, on its
    own clock, last saw the heartbeat change (or started the instance): trainer timestamps are
    another machine's clock and are not compared with `now`."""
    silent = (now - last_sign_of_life).total_seconds()
    stalled = silent > stall_seconds
    if progress is None or progress.instance_id != instance_id:
        # no heartbeat from this instance yet: boot, install and model download get their own time
        first = max(stall_seconds, first_heartbeat_seconds or 0.0)
        return Verdict.STALLED if silent > first else Verdict.STARTING
    state = TrainerState(progress.state)
    if state is TrainerState.done:
        return Verdict.DONE
    if state is TrainerState.checkpointed:
        return Verdict.CHECKPOINTED
    if state is TrainerState.failed:
        return Verdict.FAILED_PERMANENTLY if getattr(progress, "permanent", False) else Verdict.FAILED
    return Verdict.STALLED if stalled else Verdict.TRAINING


@dataclass
class RateMeter:
    """Steps per hour on the clock that measures them (virtual or wall), from heartbeats."""

    first_step: int | None = None
    first_at: datetime | None = None
    last_step: int | None = None
    last_at: datetime | None = None

    def observe(self, step: int, at: datetime) -> None:
        if self.first_step is None or self.first_at is None:
            self.first_step, self.first_at = step, at
        self.last_step, self.last_at = step, at

    @property
    def steps_per_hour(self) -> float | None:
        if None in (self.first_step, self.first_at, self.last_step, self.last_at):
            return None
        hours = (self.last_at - self.first_at).total_seconds() / 3600  # type: ignore[operator]
        steps = self.last_step - self.first_step  # type: ignore[operator]
        return steps / hours if hours > 0 and steps > 0 else None


def remaining_hours(step: int, max_steps: int, steps_per_hour: float | None, fallback: float) -> float:
    """Hours left at the measured rate; `fallback` (the pre-run estimate) until a rate is known."""
    if steps_per_hour is None:
        return fallback
    return max(0, max_steps - step) / steps_per_hour


def measurements_after(measured: Any, meter: RateMeter, workload: Any) -> Any:
    """The job's measurements once `workload`'s trainer reported a training step: it trains (its
    changeover is over) and, once two steps are seen, its rate on that instance type."""
    rate = meter.steps_per_hour
    update = {"training_workload_id": workload.id}
    if rate is not None:
        update |= {"steps_per_hour": rate, "rate_instance_type": workload.instance_type}
    return measured.model_copy(update=update)


def after_changeover(measured: Any, workload_id: str, started: datetime, first_step_at: datetime) -> Any:
    """The job's measurements once a new workload trained: it is the training one, and the
    changeover the policy plans with is the slowest seen so far (its safety net keeps only a small
    margin above it, so a single fast start must not make it plan for faster ones)."""
    took = max(0.0, (first_step_at - started).total_seconds() / 3600)
    return measured.model_copy(update={"changeover_hours": max(measured.changeover_hours or 0.0, took),
                                       "training_workload_id": workload_id})
