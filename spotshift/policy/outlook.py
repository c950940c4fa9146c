"""The spot outlook as a pure function of per-zone history up to `now`: the simulator builds it from a
trace's past ticks, the live scout from the observations it recorded; both call `outlook_from_history`.
Standard library only (the policy's core loads no numpy): sums keep numpy's order (`numpy_sum`), so
every outlook is the one the numpy version estimated, to the bit."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from itertools import accumulate

from spotshift.policy.state import SpotOutlook

HOUR_S = 3600.0
EPS_S = 1e-6  # instants this close count as one (float seconds since the epoch)
Spells = tuple[tuple[float, ...], tuple[float, ...]]  # start seconds and lengths in seconds, in order


@dataclass(frozen=True)
class ZoneObservation:
    """One zone seen at one instant: spot offered (and its price) or not. A capacity error or a
    preemption of our own instance there is an observation with `available=False`."""

    zone: str
    at: datetime
    available: bool
    price: float | None = None  # $/h when offered; the outlook uses availability only

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError("ZoneObservation.at must carry a timezone")


@dataclass(frozen=True)
class OutlookSettings:
    """How the outlook is estimated. `refresh_h`: without an availability change the outlook is the
    one as of the last multiple of this many hours (since the UNIX epoch), so it changes at known
    instants and a policy asked at those instants decides as one asked at every tick."""

    window_h: float = 24.0  # trailing window of the uptime share
    prior_run_h: float = 1.0  # one prior spell of this length (or of the current spell's age if longer)
    run_window_h: float | None = None  # only spells that began this recently count (None = all)
    refresh_h: float = 0.25

    def __post_init__(self) -> None:
        if self.window_h <= 0 or self.prior_run_h <= 0 or self.refresh_h <= 0:
            raise ValueError("window_h, prior_run_h and refresh_h must be > 0")


@dataclass(frozen=True, eq=False)
class MarketHistory:
    """Per-zone spot availability on one time grid: zone z was `available[z][i]` from `at_s[i]`
    (seconds since the UNIX epoch, ascending) until the next observation. Any sequences are
    accepted (a trace's arrays included) and kept as tuples of floats and bools."""

    zones: tuple[str, ...]
    at_s: tuple[float, ...]  # (n_obs,)
    available: tuple[tuple[bool, ...], ...]  # (n_zones, n_obs)

    def __post_init__(self) -> None:
        at_s = tuple(map(float, self.at_s))
        available = tuple(tuple(map(bool, row)) for row in self.available)
        object.__setattr__(self, "zones", tuple(self.zones))
        object.__setattr__(self, "at_s", at_s)
        object.__setattr__(self, "available", available)
        rows = {len(row) for row in available}
        if len(available) != len(self.zones) or rows - {len(at_s)}:
            shape = f"({len(available)}, {'/'.join(map(str, sorted(rows))) or 0})"
            raise ValueError(f"available {shape} must be (n_zones={len(self.zones)}, n_obs={len(at_s)})")
        if any(b <= a for a, b in zip(at_s, at_s[1:])):
            raise ValueError("at_s must be strictly ascending")

    @classmethod
    def from_observations(cls, observations: Iterable[ZoneObservation]) -> MarketHistory:
        """The grid of every instant any zone was observed; a zone keeps its last observed state
        until observed again (its first observation also stands for the instants before it); of
        two observations of one zone at one instant, the later in `observations` wins."""
        obs = sorted(observations, key=lambda o: o.at)
        zones = tuple(dict.fromkeys(o.zone for o in obs))
        times = sorted({o.at.timestamp() for o in obs})
        col = {t: i for i, t in enumerate(times)}
        seen: dict[str, list[bool | None]] = {z: [None] * len(times) for z in zones}
        for o in obs:
            seen[o.zone][col[o.at.timestamp()]] = o.available
        return cls(zones, tuple(times), tuple(_carried(seen[z]) for z in zones))

    @cached_property
    def spells(self) -> list[tuple[Spells, Spells]]:
        """Per zone: its runs (up spells) and its gaps (down spells); the last spell is still open."""
        return [(_spells(row, self.at_s), _spells([not f for f in row], self.at_s)) for row in self.available]

    @cached_property
    def _any_up(self) -> tuple[bool, ...]:
        """Per observation: whether some zone was up."""
        return tuple(map(any, zip(*self.available))) if self.available else (False,) * len(self.at_s)

    @cached_property
    def change_s(self) -> tuple[float, ...]:
        """The instants where some zone's availability differs from the observation before (the first included)."""
        columns = list(zip(*self.available)) if self.available else [()] * len(self.at_s)
        return tuple(t for i, t in enumerate(self.at_s) if i == 0 or columns[i] != columns[i - 1])

    @cached_property
    def _up_before(self) -> tuple[float, ...]:
        """Seconds in which some zone was up, from the first observation to each observation."""
        up = [d if u else 0.0 for u, d in zip(self._any_up, (b - a for a, b in zip(self.at_s, self.at_s[1:])))]
        return (0.0, *accumulate(up))

    def up_seconds(self, t: float) -> float:
        """Seconds some zone was up from the first observation to `t` (negative before it: counted as up)."""
        if t <= self.at_s[0]:
            return t - self.at_s[0]
        i = bisect_right(self.at_s, t + EPS_S) - 1
        return self._up_before[i] + (t - self.at_s[i] if self._any_up[i] else 0.0)


def outlook_as_of(history: MarketHistory, now: datetime, settings: OutlookSettings) -> tuple[float, float] | None:
    """(as_of, refresh_at) in seconds since the UNIX epoch: the instant `now`'s outlook is estimated
    at (the later of the last availability change and the last refresh instant) and the next refresh
    instant. None: nothing was observed at or before `now`."""
    now_s = now.timestamp() + EPS_S
    if len(history.at_s) == 0 or now_s < history.at_s[0]:
        return None
    step = settings.refresh_h * HOUR_S
    grid = math.floor(now_s / step) * step
    i = bisect_right(history.change_s, now_s) - 1
    return max(history.change_s[i], grid), grid + step


def outlook_from_history(
    history: MarketHistory, now: datetime, settings: OutlookSettings = OutlookSettings()
) -> SpotOutlook | None:
    """What the history up to `now` says about spot (None: no observation yet), as of
    `outlook_as_of`: the trailing share of `window_h` in which some zone was up (time before the
    first observation counts as up: no outage was seen there); per available zone the expected rest
    of its current run (the mean excess over its age of the zone's past runs that outlived that age,
    with one prior run of `prior_run_h`, or of its age if longer); per unavailable zone the expected
    rest of its current outage (the same estimate over its past outages); per zone the mean of its
    past runs with the prior (what a launch there usually buys)."""
    times = outlook_as_of(history, now, settings)
    if times is None:
        return None
    as_of, refresh_at = times
    window = settings.window_h * HOUR_S
    uptime = (history.up_seconds(as_of) - history.up_seconds(as_of - window)) / window
    i = bisect_right(history.at_s, as_of + EPS_S) - 1
    run_hours, gap_hours, fresh = {}, {}, {}
    for z, row in enumerate(history.available):
        up = row[i]
        runs, gaps = history.spells[z]
        rest = _expected_rest(runs if up else gaps, as_of, settings)
        (run_hours if up else gap_hours)[history.zones[z]] = rest / HOUR_S
        fresh[history.zones[z]] = _fresh_run(runs, as_of, settings) / HOUR_S
    return SpotOutlook(uptime=min(1.0, max(0.0, uptime)), run_hours=run_hours, gap_hours=gap_hours,
                       fresh_run_hours=fresh,
                       as_of=_utc(as_of), refresh_at=_utc(refresh_at))


def _expected_rest(spells: Spells, t: float, settings: OutlookSettings) -> float:
    """Expected seconds left of the spell in progress at `t`: the mean excess over its age of the
    past spells that outlived that age, plus one prior spell."""
    starts, lengths = spells
    i = bisect_right(starts, t + EPS_S) - 1
    age = t - starts[i]
    first = 0 if settings.run_window_h is None else bisect_left(starts, t - settings.run_window_h * HOUR_S)
    excess = [length - age for length in lengths[first:i] if length > age]
    prior = max(age, settings.prior_run_h * HOUR_S)
    return (numpy_sum(excess) + prior) / (len(excess) + 1)


def _fresh_run(runs: Spells, t: float, settings: OutlookSettings) -> float:
    """Expected seconds of a run beginning at `t`: the mean of the runs that ended by then, with one
    prior run of `prior_run_h`."""
    starts, lengths = runs
    first = 0 if settings.run_window_h is None else bisect_left(starts, t - settings.run_window_h * HOUR_S)
    past = [length for start, length in zip(starts[first:], lengths[first:]) if start + length <= t + EPS_S]
    return (numpy_sum(past) + settings.prior_run_h * HOUR_S) / (len(past) + 1)


def _carried(states: list[bool | None]) -> tuple[bool, ...]:
    """Each unobserved instant takes the state observed last before it (the first observed one
    before any observation)."""
    last = next(s for s in states if s is not None)
    out = []
    for s in states:
        last = last if s is None else s
        out.append(last)
    return tuple(out)


def _spells(flags: Sequence[bool], at_s: Sequence[float]) -> Spells:
    """Start instants and lengths of the spells of True in `flags`; the open last one ends at the last observation."""
    starts: list[float] = []
    ends: list[float] = []
    for i, (flag, before) in enumerate(zip(flags, (False, *flags))):
        if flag and not before:
            starts.append(at_s[i])
        elif before and not flag:
            ends.append(at_s[i])
    if len(ends) < len(starts):
        ends.append(at_s[-1])
    return tuple(starts), tuple(e - s for s, e in zip(starts, ends))


def numpy_sum(values: Sequence[float]) -> float:
    """The sum of `values` in numpy's order (pairwise, in blocks of 8: numpy's `pairwise_sum`), so the
    outlook rounds as it did when it was computed with numpy; `sum` or `math.fsum` round differently."""
    return 0.0 + _pairwise_sum(values, 0, len(values))


def _pairwise_sum(values: Sequence[float], lo: int, n: int) -> float:
    if n < 8:
        total = -0.0
        for k in range(lo, lo + n):
            total += values[k]
        return total
    if n <= 128:
        r = list(values[lo:lo + 8])
        i = 8
        while i < n - n % 8:
            for j in range(8):
                r[j] += values[lo + i + j]
            i += 8
        total = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        for k in range(lo + i, lo + n):
            total += values[k]
        return total
    half = n // 2 - (n // 2) % 8
    return _pairwise_sum(values, lo, half) + _pairwise_sum(values, lo + half, n - half)


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
