"""The changeover time a flow gives the policy is the slowest one measured so far for the job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from spotshift.models import JobMeasurements
from spotshift.monitoring import after_changeover


def test_the_changeover_estimate_is_the_slowest_seen_so_far():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    m = after_changeover(JobMeasurements(), "wl-1", start, start + timedelta(minutes=30))
    assert m.changeover_hours == 0.5 and m.training_workload_id == "wl-1"
    m = after_changeover(m, "wl-2", start, start + timedelta(minutes=6))  # a fast start does not lower it
    assert m.changeover_hours == 0.5 and m.training_workload_id == "wl-2"
    m = after_changeover(m, "wl-3", start, start + timedelta(minutes=45))
    assert m.changeover_hours == 0.75
