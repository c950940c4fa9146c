"""A job on the trace's tick grid: work, deadline and changeover in ticks, shared by the simulator
and the offline optimum so that both judge the very same problem."""

from __future__ import annotations

import math
from dataclasses import dataclass

EPS = 1e-9


@dataclass(frozen=True)
class TickJob:
    """C0 hours of work with a deadline R0 hours after the start and a changeover of d hours,
    measured in ticks. The changeover is rounded up to whole ticks; the last work tick is billed
    per second (`last_fraction` of a tick)."""

    work_ticks: float
    deadline_ticks: float
    changeover_ticks: int

    @classmethod
    def from_hours(cls, work_h: float, deadline_h: float, changeover_h: float, tick_seconds: float) -> TickJob:
        if work_h <= 0 or deadline_h <= 0 or changeover_h < 0 or tick_seconds <= 0:
            raise ValueError("work_h and deadline_h must be > 0, changeover_h >= 0, tick_seconds > 0")
        per_h = 3600.0 / tick_seconds
        return cls(work_h * per_h, deadline_h * per_h, math.ceil(changeover_h * per_h - EPS))

    @property
    def work_steps(self) -> int:
        """Ticks of training that touch the work (the last one maybe partly)."""
        return max(1, math.ceil(self.work_ticks - EPS))

    @property
    def last_fraction(self) -> float:
        return self.work_ticks - (self.work_steps - 1)

    def finishes_in_time(self, last_tick: int) -> bool:
        """Whether work whose last tick (from the start) is `last_tick` ends by the deadline."""
        return last_tick + self.last_fraction <= self.deadline_ticks + EPS

    @property
    def horizon(self) -> int:
        """The number of ticks from the start in which the last work tick can still fall."""
        return max(0, math.floor(self.deadline_ticks - self.last_fraction + EPS) + 1)
