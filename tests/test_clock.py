from datetime import UTC, datetime, timedelta

import pytest

from spotshift.clock import VirtualClock


def test_virtual_time_runs_speedup_times_faster():
    wall = [100.0]
    clock = VirtualClock(start=datetime(2026, 1, 1, tzinfo=UTC), speedup=60, _wall0=100.0, _wall=lambda: wall[0])
    wall[0] = 102.5
    assert clock() == datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=150)
    assert clock.wall_seconds(600) == 10


def test_bad_clocks_are_refused():
    with pytest.raises(ValueError, match="speedup"):
        VirtualClock(start=datetime(2026, 1, 1, tzinfo=UTC), speedup=0)
    with pytest.raises(ValueError, match="timezone"):
        VirtualClock(start=datetime(2026, 1, 1))
