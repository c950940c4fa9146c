"""The migration agents' waits against real S3 (moto): a checkpoint request is given up as soon as
its instance is gone, and an honoured request wins over an instance that shut itself down after it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from spotshift.monitoring import TrainerFailedPermanently
from tasks.migration import MigrationTimeout, wait_for_checkpoint, wait_for_heartbeat
from training.contract import ControlRequest, Progress, TrainerState, read_control, write_control, write_progress


class StepClock:
    """A clock that moves `step` seconds at every sleep (no real waiting)."""

    def __init__(self, step: float = 1.0) -> None:
        self.now = datetime(2026, 3, 1, tzinfo=UTC)
        self.step = step
        self.sleeps = 0

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, _: float) -> None:
        self.sleeps += 1
        self.now += timedelta(seconds=self.step)


def _request(s3, output: str, rid: str) -> str:
    write_control(s3, output, ControlRequest(request_id=rid, reason="test move"))
    assert read_control(s3, output) is not None
    return rid


def _wait(s3, output: str, rid: str, clock: StepClock, alive) -> int:
    return wait_for_checkpoint.fn(s3, output, rid, timeout_s=600, poll_s=1, sleep=clock.sleep, clock=clock,
                                  is_alive=alive)


def test_a_checkpoint_request_is_given_up_when_its_instance_is_taken_back(s3, bucket):
    output = f"s3://{bucket}/jobs/j1/"
    rid = _request(s3, output, "r1")
    checks = iter([True, True, False])  # taken back at the third poll
    clock = StepClock()
    with pytest.raises(MigrationTimeout, match="went away"):
        _wait(s3, output, rid, clock, lambda: next(checks))
    assert clock.sleeps == 2  # not the 600 s timeout
    assert read_control(s3, output) is None  # the next trainer on this prefix must not honour it


def test_an_honoured_request_returns_its_step_even_if_the_instance_then_shut_down(s3, bucket):
    output = f"s3://{bucket}/jobs/j2/"
    rid = _request(s3, output, "r2")
    write_progress(s3, output, Progress(state=TrainerState.checkpointed, step=40, max_steps=100,
                                        updated_at=datetime.now(UTC), honoured_request_id=rid))
    assert _wait(s3, output, rid, StepClock(), lambda: False) == 40
    assert read_control(s3, output) is None


def _wait_for_first_step(s3, output: str, clock: StepClock) -> None:
    wait_for_heartbeat.fn(s3, output, "i-new", 40, timeout_s=600, poll_s=1, sleep=clock.sleep, clock=clock)


def test_a_new_trainer_that_failed_permanently_is_not_a_timeout_so_no_other_placement_is_tried(s3, bucket):
    output = f"s3://{bucket}/jobs/j3/"
    reason = "IncompatibleCheckpoint: checkpoint step-40 was written with transformers 5.25.0; ..."
    write_progress(s3, output, Progress(state=TrainerState.failed, step=0, max_steps=100, instance_id="i-new",
                                        updated_at=datetime.now(UTC), permanent=True, error=reason))
    clock = StepClock()
    with pytest.raises(TrainerFailedPermanently) as failed:
        _wait_for_first_step(s3, output, clock)
    assert not isinstance(failed.value, MigrationTimeout)  # recover() and move() re-plan on a MigrationTimeout
    assert str(failed.value) == reason and failed.value.instance_id == "i-new"
    assert clock.sleeps == 0


def test_a_new_trainer_that_failed_otherwise_is_a_timeout_another_placement_may_fix(s3, bucket):
    output = f"s3://{bucket}/jobs/j4/"
    write_progress(s3, output, Progress(state=TrainerState.failed, step=0, max_steps=100, instance_id="i-new",
                                        updated_at=datetime.now(UTC), error="RuntimeError: CUDA error"))
    with pytest.raises(MigrationTimeout, match="CUDA error"):
        _wait_for_first_step(s3, output, StepClock())
