"""Clocks: the wall clock, and a virtual clock that runs faster, so a replayed market and the
job's deadline and bills move together (the demo runs an hour of market in a wall minute)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Callable, Protocol


class Clock(Protocol):
    def __call__(self) -> datetime: ...


def wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class VirtualClock:
    """now() = start + (wall seconds since creation) x speedup."""

    start: datetime
    speedup: float = 1.0
    _wall0: float = field(default_factory=time.monotonic)
    _wall: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if self.speedup <= 0:
            raise ValueError(f"speedup must be > 0, got {self.speedup}")
        if self.start.tzinfo is None:
            raise ValueError("start must carry a timezone")

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=(self._wall() - self._wall0) * self.speedup)

    def wall_seconds(self, virtual_seconds: float) -> float:
        """How long a stretch of virtual time takes on the wall clock."""
        return virtual_seconds / self.speedup
