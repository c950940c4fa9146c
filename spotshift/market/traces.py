"""Real spot traces as numpy arrays: per-zone availability (1 = available) and spot price per tick.

Reads folders of `<zone>_<gpu>_1.csv` (`date,availability`) plus an optional
`<gpu>_spot_prices.json` ({"<zone>_<gpu>_1": [usd per tick]}) aligned with the CSV rows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from spotshift.catalog import region_of

TRACE_FILE = re.compile(r"^(?P<zone>[a-z]{2}(?:-[a-z0-9]+)+?-\d+[a-z])_(?P<gpu>[a-z0-9]+)_1$")


@dataclass(frozen=True, eq=False)
class TraceSet:
    """Spot availability and prices of several zones on one common tick grid."""

    names: tuple[str, ...]
    zones: tuple[str, ...]
    regions: tuple[str, ...]
    gpu: str
    start: datetime
    tick_seconds: float
    available: np.ndarray  # bool (n_zones, n_ticks)
    spot_price: np.ndarray  # float $/h (n_zones, n_ticks), NaN = unknown
    # seconds since `start` of each tick as recorded (ticks drift around tick_seconds);
    # None = a regular grid of tick_seconds.
    offsets_s: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("TraceSet.start must carry a timezone (UTC)")
        shape = (len(self.zones), self.available.shape[1] if self.available.ndim == 2 else -1)
        if self.available.shape != shape or self.spot_price.shape != shape:
            raise ValueError(
                f"available {self.available.shape} and spot_price {self.spot_price.shape} "
                f"must both be (n_zones={len(self.zones)}, n_ticks)"
            )
        if self.offsets_s is not None and self.offsets_s.shape != (shape[1],):
            raise ValueError(f"offsets_s must have one entry per tick ({shape[1]})")

    @property
    def n_ticks(self) -> int:
        return int(self.available.shape[1])

    @property
    def end(self) -> datetime:
        """The instant one tick after the last one."""
        return self.time_of(self.n_ticks - 1) + timedelta(seconds=self.tick_seconds)

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    def zone_index(self, zone: str) -> int:
        try:
            return self.zones.index(zone)
        except ValueError:
            raise KeyError(f"zone {zone!r} is not in this trace. Choose between {', '.join(self.zones)}") from None

    def availability_share(self) -> dict[str, float]:
        """zone -> share of ticks with spot capacity available."""
        return {z: float(s) for z, s in zip(self.zones, self.available.mean(axis=1))}

    def select(self, zone_substr: str | None) -> TraceSet:
        """The zones whose name contains `zone_substr` (None or '' = all)."""
        if not zone_substr:
            return self
        keep = [i for i, z in enumerate(self.zones) if zone_substr in z]
        if not keep:
            raise ValueError(f"no zone contains {zone_substr!r}. Zones: {', '.join(self.zones)}")
        return TraceSet(
            names=tuple(self.names[i] for i in keep),
            zones=tuple(self.zones[i] for i in keep),
            regions=tuple(self.regions[i] for i in keep),
            gpu=self.gpu,
            start=self.start,
            tick_seconds=self.tick_seconds,
            available=self.available[keep],
            spot_price=self.spot_price[keep],
            offsets_s=self.offsets_s,
        )

    def tick_at(self, t: datetime) -> int:
        """The tick in force at `t` (the last one that began at or before `t`)."""
        seconds = (t - self.start).total_seconds()
        if seconds < 0 or t >= self.end:
            raise ValueError(f"{t.isoformat()} is outside the trace [{self.start.isoformat()}, {self.end.isoformat()})")
        if self.offsets_s is None:
            return min(int(seconds // self.tick_seconds), self.n_ticks - 1)
        return int(np.searchsorted(self.offsets_s, seconds, side="right")) - 1

    def time_of(self, tick: int) -> datetime:
        """The instant tick `tick` began."""
        if not 0 <= tick < self.n_ticks:
            raise ValueError(f"tick {tick} is outside [0, {self.n_ticks})")
        seconds = tick * self.tick_seconds if self.offsets_s is None else float(self.offsets_s[tick])
        return self.start + timedelta(seconds=seconds)


def find_prices_file(trace_dir: Path, gpu: str) -> Path | None:
    """`<gpu>_spot_prices.json` in `trace_dir` or the nearest parent that has one."""
    name = f"{gpu}_spot_prices.json"
    for folder in (trace_dir, *trace_dir.resolve().parents):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class _ZoneFile:
    name: str
    zone: str
    gpu: str
    times: np.ndarray  # datetime64[s]
    available: np.ndarray  # bool


def _read_csv(path: Path) -> _ZoneFile:
    m = TRACE_FILE.match(path.stem)
    if not m:
        raise ValueError(f"trace file {path.name!r} must be named <zone>_<gpu>_1.csv, e.g. us-east-1a_v100_1.csv")
    lines = path.read_text().split()
    if not lines or lines[0].strip() != "date,availability":
        raise ValueError(f"{path}: the header must be 'date,availability'")
    # a line is "YYYY-MM-DD HH:MM:SS,0|1": split() cut it at the space
    rows = np.array(lines[1:]).reshape(-1, 2)
    dates = np.char.add(np.char.add(rows[:, 0], "T"), np.char.partition(rows[:, 1], ",")[:, 0])
    flags = np.char.partition(rows[:, 1], ",")[:, 2]
    bad = ~np.isin(flags, ("0", "1"))
    if bad.any():
        raise ValueError(f"{path}: availability must be 0 or 1, got {str(flags[bad][0])!r} on row {int(np.argmax(bad)) + 2}")
    return _ZoneFile(path.stem, m["zone"], m["gpu"], dates.astype("datetime64[s]"), flags == "1")


def _trace_files(trace_dir: Path) -> list[Path]:
    files = sorted(p for p in trace_dir.glob("*_1.csv") if TRACE_FILE.match(p.stem))
    if not files:
        files = sorted(p for p in trace_dir.rglob("*_1.csv") if TRACE_FILE.match(p.stem))
        folders = {p.parent for p in files}
        if len(folders) > 1:
            raise ValueError(
                f"{trace_dir} holds trace files in several folders ({', '.join(sorted(map(str, folders)))}): "
                "pass one of them"
            )
    if not files:
        raise FileNotFoundError(f"no <zone>_<gpu>_1.csv trace files in {trace_dir}")
    return files


def load_traces(
    trace_dir: Path | str, prices_file: Path | str | None = None, zones: str | None = None
) -> TraceSet:
    """Load a folder of availability CSVs (and the GPU's price JSON, found in a parent when not
    given) onto one tick grid; `zones` keeps the zones whose name contains that substring."""
    trace_dir = Path(trace_dir)
    parsed = [_read_csv(p) for p in _trace_files(trace_dir)]
    if zones:
        parsed = [z for z in parsed if zones in z.zone]
        if not parsed:
            raise ValueError(f"no trace in {trace_dir} has a zone containing {zones!r}")
    gpus = sorted({z.gpu for z in parsed})
    if len(gpus) > 1:
        raise ValueError(f"{trace_dir} mixes GPUs {gpus}: put each GPU's traces in its own folder")
    gpu = gpus[0]

    # common window: from the latest first tick to the shortest remaining length
    start = max(z.times[0] for z in parsed)
    firsts = [int(np.searchsorted(z.times, start)) for z in parsed]
    n_ticks = min(len(z.times) - i for z, i in zip(parsed, firsts))
    if n_ticks < 2:
        raise ValueError(f"the traces in {trace_dir} share fewer than 2 ticks")
    grid = parsed[0].times[firsts[0]: firsts[0] + n_ticks]
    offsets = (grid - grid[0]).astype(np.float64)
    tick_seconds = float(np.median(np.diff(offsets)))

    available = np.stack([z.available[i: i + n_ticks] for z, i in zip(parsed, firsts)])
    spot_price = np.full(available.shape, np.nan)
    prices_path = Path(prices_file) if prices_file else find_prices_file(trace_dir, gpu)
    if prices_path is not None:
        table = json.loads(Path(prices_path).read_text())
        for row, (z, first) in enumerate(zip(parsed, firsts)):
            if z.name not in table:
                continue
            series = np.asarray(table[z.name], dtype=np.float64)
            if len(series) != len(z.times):
                raise ValueError(
                    f"{prices_path}: {z.name!r} has {len(series)} prices for {len(z.times)} trace rows; "
                    "they must be aligned one to one"
                )
            spot_price[row] = series[first: first + n_ticks]

    start_dt = grid[0].astype("datetime64[s]").astype(datetime).replace(tzinfo=UTC)
    return TraceSet(
        names=tuple(z.name for z in parsed),
        zones=tuple(z.zone for z in parsed),
        regions=tuple(region_of(z.zone) for z in parsed),
        gpu=gpu,
        start=start_dt,
        tick_seconds=tick_seconds,
        available=available,
        spot_price=spot_price,
        offsets_s=offsets,
    )
