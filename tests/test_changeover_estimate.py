"""The changeover time a flow gives the policy is the slowest one measured so far for the job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flows.steps import JobRun, _measure_changeover


def test_the_changeover_estimate_is_the_slowest_seen_so_far():
    run = JobRun(job=None, query=None, total_work=1.0)  # neither is read when measuring
    start = datetime(2026, 1, 1, tzinfo=UTC)
    _measure_changeover(run, start, start + timedelta(minutes=30))
    assert run.changeover_hours == 0.5
    _measure_changeover(run, start, start + timedelta(minutes=6))  # a fast start does not lower it
    assert run.changeover_hours == 0.5
    _measure_changeover(run, start, start + timedelta(minutes=45))
    assert run.changeover_hours == 0.75
