"""The spot outlook as a pure function of per-zone history up to `now`: the same from a trace as from
recorded observations, blind to the future, refreshed at known instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from spotshift.policy.outlook import MarketHistory, OutlookSettings, ZoneObservation, outlook_from_history
from tests.test_policy_cadence import random_market

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MIN = timedelta(minutes=1)


def observations(available: np.ndarray, zones: tuple[str, ...], tick: timedelta, upto: int) -> list[ZoneObservation]:
    """What a scout polling every `tick` would have recorded, up to tick `upto` included."""
    return [ZoneObservation(z, T0 + k * tick, bool(available[i, k]), 1.0)
            for k in range(upto + 1) for i, z in enumerate(zones)]


@pytest.mark.parametrize("tick", [0, 7, 95, 240, 399])
def test_recorded_observations_give_the_replay_s_outlook(tick):
    m = random_market(3, 400, 600.0)
    start = m.traces.start
    recorded = [ZoneObservation(z, start + timedelta(seconds=600 * k), bool(m.available[i, k]))
                for k in range(tick + 1) for i, z in enumerate(m.traces.zones)]
    live = outlook_from_history(MarketHistory.from_observations(recorded), m.time_of(tick))
    assert live == m.outlook(tick)  # only the past was recorded: the replay saw no future either
    assert set(live.run_hours) == {z for i, z in enumerate(m.traces.zones) if m.available[i, tick]}


def test_without_a_change_the_outlook_moves_at_each_refresh_and_a_run_s_estimate_grows_with_its_age():
    # one zone up from the start, never down: no past run, so its expected rest is its age (at least the 1 h prior)
    zones = ("us-west-2a",)
    history = MarketHistory.from_observations(observations(np.ones((1, 600)), zones, 5 * MIN, 599))
    at = [outlook_from_history(history, T0 + k * MIN) for k in range(0, 200, 5)]
    for k, o in zip(range(0, 200, 5), at):
        refreshed = T0 + (k // 15) * 15 * MIN
        assert o.as_of == refreshed and o.refresh_at == refreshed + 15 * MIN
        assert o.run_hours["us-west-2a"] == pytest.approx(max(1.0, (refreshed - T0) / timedelta(hours=1)))
    assert at[0] == at[2] != at[3]  # minutes 0 and 10 share the 00:00 estimate, minute 15 has its own
    assert at[-1].run_hours["us-west-2a"] > 3.0


def test_a_change_of_availability_is_seen_at_once_and_an_outage_estimated_from_past_outages():
    available = np.ones((2, 100), dtype=bool)
    available[1, 10:16] = False  # a past outage of 6 ticks (30 min)
    available[1, 40:] = False  # capacity error at tick 40
    history = MarketHistory.from_observations(observations(available, ("us-east-1a", "us-east-1b"), 5 * MIN, 99))
    o = outlook_from_history(history, T0 + 41 * 5 * MIN)
    assert o.as_of == T0 + 40 * 5 * MIN  # the change, later than the 03:15 refresh
    assert set(o.run_hours) == {"us-east-1a"} and set(o.gap_hours) == {"us-east-1b"}
    assert o.gap_hours["us-east-1b"] == pytest.approx((0.5 + 1.0) / 2)  # the past outage and the 1 h prior, at age 0
    # 24 h window: everything before the first observation counts as up, and us-east-1a never went down
    assert o.uptime == 1.0


def test_uptime_is_the_share_of_the_window_with_some_zone_up():
    available = np.ones((1, 300), dtype=bool)
    available[0, 100:160] = False  # 60 ticks of 5 min = 5 h with no spot anywhere
    history = MarketHistory.from_observations(observations(available, ("us-east-1a",), 5 * MIN, 299))
    o = outlook_from_history(history, T0 + 300 * 5 * MIN, OutlookSettings(window_h=24.0))
    assert o.uptime == pytest.approx(1 - 5 / 24)


def test_zones_observed_at_different_instants_keep_their_last_state():
    obs = [ZoneObservation("us-east-1a", T0, True), ZoneObservation("us-east-1b", T0 + 3 * MIN, False),
           ZoneObservation("us-east-1a", T0 + 7 * MIN, False), ZoneObservation("us-east-1b", T0 + 9 * MIN, True)]
    history = MarketHistory.from_observations(reversed(obs))
    assert history.zones == ("us-east-1a", "us-east-1b")
    assert [list(row) for row in history.available] == [[True, True, False, False], [False, False, False, True]]
    assert set(outlook_from_history(history, T0 + 8 * MIN).gap_hours) == {"us-east-1a", "us-east-1b"}
    assert outlook_from_history(history, T0 - MIN) is None  # nothing observed yet


def test_bad_history_is_rejected_naming_the_field():
    with pytest.raises(ValueError, match="timezone"):
        ZoneObservation("us-east-1a", datetime(2026, 1, 1), True)
    with pytest.raises(ValueError, match="available"):
        MarketHistory(("us-east-1a",), np.array([0.0, 1.0]), np.ones((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="ascending"):
        MarketHistory(("us-east-1a",), np.array([1.0, 0.0]), np.ones((1, 2), dtype=bool))
    with pytest.raises(ValueError, match="refresh_h"):
        OutlookSettings(refresh_h=0)


def test_a_zone_s_usual_run_is_the_mean_of_its_ended_runs_with_the_prior():
    # 10-minute ticks: the zone ran 2 h, then 4 h (30 minutes down before each), and is up again since
    # 1 h; the run in progress is not counted (its end is not known yet), the 1 h prior is
    zones = ("us-west-2a",)
    flags = np.concatenate([np.zeros(3), np.ones(12), np.zeros(3), np.ones(24), np.zeros(3), np.ones(40)])
    history = MarketHistory.from_observations(observations(flags[None, :], zones, 10 * MIN, len(flags) - 1))
    now = T0 + (3 + 12 + 3 + 24 + 3 + 6) * 10 * MIN
    assert outlook_from_history(history, now).fresh_run_hours["us-west-2a"] == pytest.approx((2 + 4 + 1) / 3)
    # down: its last run has ended and counts
    down = T0 + (3 + 12 + 3 + 24 + 1) * 10 * MIN
    assert outlook_from_history(history, down).fresh_run_hours["us-west-2a"] == pytest.approx((2 + 4 + 1) / 3)
    before = T0 + (3 + 12 + 1) * 10 * MIN
    assert outlook_from_history(history, before).fresh_run_hours["us-west-2a"] == pytest.approx((2 + 1) / 2)
