"""spotshift.market.traces on the real V100 traces (read in place) and on tiny written folders."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from spotshift.market.traces import TraceSet, find_prices_file, load_traces

# SOURCES.md: measured share of time available (2-month V100 set)
SOURCES_SHARE = {
    "us-east-1a": 0.167, "us-east-1c": 0.467, "us-east-1d": 0.447, "us-east-1f": 0.591,
    "us-east-2a": 0.759, "us-east-2b": 0.682,
    "us-west-2a": 0.883, "us-west-2b": 0.905, "us-west-2c": 0.891,
}


@pytest.fixture(scope="module")
def v100_dir(traces_dir):
    return traces_dir / "skynomad-artifact" / "data" / "real" / "availability" / "2023-02-15" / "processed"


@pytest.fixture(scope="module")
def v100(v100_dir) -> TraceSet:
    return load_traces(v100_dir)


def test_availability_share_matches_sources_md(v100):
    assert {z: round(s, 3) for z, s in v100.availability_share().items()} == SOURCES_SHARE


def test_grid_and_names_come_from_the_files(v100):
    assert v100.gpu == "v100"
    assert v100.names[0] == "us-east-1a_v100_1"
    assert v100.regions == ("us-east-1",) * 4 + ("us-east-2",) * 2 + ("us-west-2",) * 3
    assert v100.available.shape == v100.spot_price.shape == (9, 20158)
    assert v100.available.dtype == bool
    assert v100.start == datetime(2023, 2, 15, 22, 8, 16, tzinfo=UTC)
    assert v100.tick_seconds == 195
    assert v100.time_of(20157) == datetime(2023, 4, 2, 11, 54, 51, tzinfo=UTC)


def test_prices_at_an_instant_match_the_json(v100, v100_dir):
    table = json.loads(find_prices_file(v100_dir, "v100").read_text())
    t = datetime(2023, 3, 10, 12, 0, tzinfo=UTC)
    tick = v100.tick_at(t)
    assert v100.time_of(tick) <= t < v100.time_of(tick + 1)
    for i, name in enumerate(v100.names):
        assert v100.spot_price[i, tick] == table[name][tick]
    assert not np.isnan(v100.spot_price).any()


def test_availability_at_an_instant_matches_the_csv(v100, v100_dir):
    tick = 12345
    row = (v100_dir / "us-east-2b_v100_1.csv").read_text().splitlines()[tick + 1]
    when, flag = row.split(",")
    assert v100.time_of(tick) == datetime.fromisoformat(when).replace(tzinfo=UTC)
    assert v100.available[v100.zone_index("us-east-2b"), tick] == (flag == "1")


def test_select_keeps_matching_zones(v100):
    west = v100.select("us-west-2")
    assert west.zones == ("us-west-2a", "us-west-2b", "us-west-2c")
    np.testing.assert_array_equal(west.available, v100.available[6:])
    with pytest.raises(ValueError, match="no zone contains 'eu-'"):
        v100.select("eu-")


def test_tick_at_rejects_times_outside_the_trace(v100):
    with pytest.raises(ValueError, match="outside the trace"):
        v100.tick_at(v100.start - timedelta(seconds=1))
    with pytest.raises(ValueError, match="outside the trace"):
        v100.tick_at(v100.end)


def _write(folder, name, rows):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.csv").write_text("date,availability\n" + "".join(f"{d},{a}\n" for d, a in rows))


def _rows(start: datetime, flags: str, step_s: int = 600):
    return [((start + timedelta(seconds=i * step_s)).strftime("%Y-%m-%d %H:%M:%S"), f) for i, f in enumerate(flags)]


def test_zones_of_different_spans_are_trimmed_to_the_common_window(tmp_path):
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    data = tmp_path / "data"
    _write(data / "avail", "eu-west-1a_a100_1", _rows(t0, "110011"))
    _write(data / "avail", "eu-west-1b_a100_1", _rows(t0 + timedelta(seconds=1200), "0101"))
    (data / "a100_spot_prices.json").write_text(json.dumps(
        {"eu-west-1a_a100_1": [1, 2, 3, 4, 5, 6], "eu-west-1b_a100_1": [7, 8, 9, 10]}
    ))
    ts = load_traces(data / "avail")
    assert ts.start == t0 + timedelta(seconds=1200)
    assert ts.tick_seconds == 600
    assert ts.available.tolist() == [[False, False, True, True], [False, True, False, True]]
    assert ts.spot_price.tolist() == [[3, 4, 5, 6], [7, 8, 9, 10]]
    assert ts.tick_at(ts.start + timedelta(seconds=1300)) == 2


def test_missing_prices_are_nan_and_bad_files_are_named(tmp_path):
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    _write(tmp_path, "us-east-1a_t4_1", _rows(t0, "10"))
    ts = load_traces(tmp_path, zones="us-east-1")
    assert np.isnan(ts.spot_price).all() and ts.available.tolist() == [[True, False]]
    _write(tmp_path, "us-east-1b_t4_1", _rows(t0, "12"))
    with pytest.raises(ValueError, match=r"us-east-1b_t4_1.csv: availability must be 0 or 1, got '2' on row 3"):
        load_traces(tmp_path)
    with pytest.raises(FileNotFoundError, match="no <zone>_<gpu>_1.csv"):
        load_traces(tmp_path / "empty-but-missing")


def test_price_series_of_the_wrong_length_is_rejected(tmp_path):
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    _write(tmp_path, "us-east-1a_t4_1", _rows(t0, "101"))
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"us-east-1a_t4_1": [1.0, 2.0]}))
    with pytest.raises(ValueError, match="2 prices for 3 trace rows"):
        load_traces(tmp_path, prices_file=prices)
