"""The spot outlook as a pure function of per-zone history up to `now`: the simulator builds it from a
trace's past ticks, the live scout from the observations it recorded; both call `outlook_from_history`."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property

import numpy as np

from spotshift.policy.state import SpotOutlook

HOUR_S = 3600.0
EPS_S = 1e-6  # instants this close count as one (float seconds since the epoch)
Spells = tuple[np.ndarray, np.ndarray]  # start seconds and lengths in seconds, in order


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
    """Per-zone spot availability on one time grid: zone z was `available[z, i]` from `at_s[i]`
    (seconds since the UNIX epoch, ascending) until the next observation."""

    zones: tuple[str, ...]
    at_s: np.ndarray  # (n_obs,) float
    available: np.ndarray  # (n_zones, n_obs) bool

    def __post_init__(self) -> None:
        if self.available.shape != (len(self.zones), len(self.at_s)):
            raise ValueError(
                f"available {self.available.shape} must be (n_zones={len(self.zones)}, n_obs={len(self.at_s)})")
        if len(self.at_s) > 1 and not (np.diff(self.at_s) > 0).all():
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
        seen = np.full((len(zones), len(times)), -1, dtype=np.int8)
        row = {z: i for i, z in enumerate(zones)}
        for o in obs:
            seen[row[o.zone], col[o.at.timestamp()]] = int(o.available)
        for r in seen:  # carry each state forward, and the first one back
            known = np.flatnonzero(r >= 0)
            r[:] = r[known[np.maximum(np.searchsorted(known, np.arange(len(r)), side="right") - 1, 0)]]
        return cls(zones, np.array(times, dtype=float), seen.astype(bool))

    @cached_property
    def spells(self) -> list[tuple[Spells, Spells]]:
        """Per zone: its runs (up spells) and its gaps (down spells); the last spell is still open."""
        return [(_spells(row, self.at_s), _spells(~row, self.at_s)) for row in self.available]

    @cached_property
    def change_s(self) -> np.ndarray:
        """The instants where some zone's availability differs from the observation before (the first included)."""
        changed = np.ones(len(self.at_s), dtype=bool)
        changed[1:] = (self.available[:, 1:] != self.available[:, :-1]).any(axis=0)
        return self.at_s[changed]

    @cached_property
    def _up_before(self) -> np.ndarray:
        """Seconds in which some zone was up, from the first observation to each observation."""
        up = self.available.any(axis=0)
        return np.concatenate([[0.0], np.cumsum(up[:-1] * np.diff(self.at_s))])

    def up_seconds(self, t: float) -> float:
        """Seconds some zone was up from the first observation to `t` (negative before it: counted as up)."""
        if t <= self.at_s[0]:
            return t - self.at_s[0]
        i = int(np.searchsorted(self.at_s, t + EPS_S, side="right")) - 1
        return float(self._up_before[i]) + bool(self.available[:, i].any()) * (t - self.at_s[i])


def outlook_as_of(history: MarketHistory, now: datetime, settings: OutlookSettings) -> tuple[float, float] | None:
    """(as_of, refresh_at) in seconds since the UNIX epoch: the instant `now`'s outlook is estimated
    at (the later of the last availability change and the last refresh instant) and the next refresh
    instant. None: nothing was observed at or before `now`."""
    now_s = now.timestamp() + EPS_S
    if len(history.at_s) == 0 or now_s < history.at_s[0]:
        return None
    step = settings.refresh_h * HOUR_S
    grid = math.floor(now_s / step) * step
    i = int(np.searchsorted(history.change_s, now_s, side="right")) - 1
    return max(float(history.change_s[i]), grid), grid + step


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
    i = int(np.searchsorted(history.at_s, as_of + EPS_S, side="right")) - 1
    run_hours, gap_hours, fresh = {}, {}, {}
    for z, up in enumerate(history.available[:, i]):
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
    i = int(np.searchsorted(starts, t + EPS_S, side="right")) - 1
    age = t - starts[i]
    first = 0 if settings.run_window_h is None else int(np.searchsorted(starts, t - settings.run_window_h * HOUR_S))
    past = lengths[first:i]
    longer = past[past > age]
    prior = max(age, settings.prior_run_h * HOUR_S)
    return (float((longer - age).sum()) + prior) / (len(longer) + 1)


def _fresh_run(runs: Spells, t: float, settings: OutlookSettings) -> float:
    """Expected seconds of a run beginning at `t`: the mean of the runs that ended by then, with one
    prior run of `prior_run_h`."""
    starts, lengths = runs
    first = 0 if settings.run_window_h is None else int(np.searchsorted(starts, t - settings.run_window_h * HOUR_S))
    ended = (starts[first:] + lengths[first:]) <= t + EPS_S
    past = lengths[first:][ended]
    return (float(past.sum()) + settings.prior_run_h * HOUR_S) / (len(past) + 1)


def _spells(flags: np.ndarray, at_s: np.ndarray) -> Spells:
    """Start instants and lengths of the spells of True in `flags`; the open last one ends at the last observation."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    begin, end = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    ends = np.append(at_s, at_s[-1])[end] if len(at_s) else at_s
    return at_s[begin], ends - at_s[begin]


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
