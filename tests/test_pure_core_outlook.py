"""The outlook without numpy (spotshift.policy.outlook): its sums round as numpy's did, so the policy's
decisions over the same history are the ones it made when the outlook was computed with numpy."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from spotshift.policy.outlook import MarketHistory, ZoneObservation, numpy_sum, outlook_from_history


@pytest.mark.parametrize("length", [0, 1, 7, 8, 9, 15, 16, 17, 63, 127, 128, 129, 130, 255, 256, 257, 1000, 4099])
def test_numpy_sum_is_numpys_sum_to_the_bit(length):
    rng = random.Random(length)
    values = [rng.choice([rng.random() * 1e4, rng.expovariate(1e-3), 600.0 * rng.randrange(1, 100) + rng.random()])
              for _ in range(length)]
    assert numpy_sum(values) == float(np.asarray(values).sum())


def test_left_to_right_addition_would_round_differently():
    """What numpy_sum guards against: over lists of 16-300 values, plain `sum` often differs from
    numpy's last bit; numpy_sum never does."""
    rng = random.Random(0)
    lists = [[rng.random() * 1e4 for _ in range(rng.randrange(16, 300))] for _ in range(50)]
    assert any(sum(v) != float(np.asarray(v).sum()) for v in lists)
    assert all(numpy_sum(v) == float(np.asarray(v).sum()) for v in lists)


def test_a_history_of_arrays_and_one_of_lists_give_one_outlook():
    """The simulator hands a trace's numpy arrays, the live scout recorded observations: one outlook."""
    rng = np.random.default_rng(3)
    available = rng.random((3, 500)) < 0.8
    at_s = datetime(2026, 1, 1, tzinfo=UTC).timestamp() + 600.0 * np.arange(500)
    zones = ("us-east-1a", "us-east-1b", "us-west-2a")
    from_arrays = MarketHistory(zones, at_s, available)
    observed = MarketHistory.from_observations(
        ZoneObservation(z, datetime.fromtimestamp(float(t), UTC), bool(available[i, k]))
        for k, t in enumerate(at_s) for i, z in enumerate(zones))
    assert observed.available == from_arrays.available and observed.at_s == from_arrays.at_s
    now = datetime.fromtimestamp(float(at_s[-1]), UTC) + timedelta(minutes=3)
    assert outlook_from_history(from_arrays, now) == outlook_from_history(observed, now)
    assert all(isinstance(t, float) for t in from_arrays.at_s)
