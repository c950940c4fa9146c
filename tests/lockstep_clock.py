"""A virtual clock that moves only when the flow sleeps, in lockstep with the local backend's
trainers (tests/fake_trainer.py --clock-dir): a replay that no machine load can stretch."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path


class LockstepClock:
    """now() is a virtual instant that stands still while the flow works and moves by `seconds` in
    `sleep(seconds)`. A sleep first waits until every running trainer (a pid file in `instances`)
    acknowledged the current instant, moves on, runs the `on_advance` hooks (the backend's spot
    notices at the new instant), publishes it in `folder`/now and waits for the trainers again: the
    flow's next look sees what the trainers did up to that instant, as the simulator's next tick does."""

    def __init__(self, start: datetime, folder: Path, instances: Path, *, wall_timeout_s: float = 60.0) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.instances = Path(instances)
        self.wall_timeout_s = wall_timeout_s
        self.on_advance: list[Callable[[], object]] = []
        self._now = start.timestamp()
        self._seq = 0
        self._publish()

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(self._now, UTC)

    def sleep(self, seconds: float) -> None:
        self._settle()
        self._now += seconds
        self._seq += 1
        for hook in self.on_advance:
            hook()
        self._publish()
        self._settle()

    def settle(self) -> None:
        """Let the trainers act again at the current instant (on a control request just written)."""
        self._settle()
        self._seq += 1
        self._publish()
        self._settle()

    def _publish(self) -> None:
        path = self.folder / "now"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{self._seq} {self._now!r}")
        os.replace(tmp, path)

    def _settle(self) -> None:
        """Wait (wall time) until each running trainer acknowledged the current instant or ended."""
        give_up = time.monotonic() + self.wall_timeout_s
        for pid_file in self.instances.glob("*.pid"):
            instance_id = pid_file.stem
            while not self._acknowledged(instance_id) and _running(pid_file):
                if time.monotonic() > give_up:
                    raise TimeoutError(f"trainer of {instance_id} did not acknowledge instant {self()} "
                                       f"within {self.wall_timeout_s:.0f} wall seconds")
                time.sleep(0.0005)

    def _acknowledged(self, instance_id: str) -> bool:
        try:
            return int((self.folder / f"ack-{instance_id}").read_text()) >= self._seq
        except (OSError, ValueError):
            return False


def _running(pid_file: Path) -> bool:
    """Whether the process a local instance's pid file names is alive (not gone, not a zombie)."""
    try:
        pid = int(pid_file.read_text())
        return not (Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"))
    except (OSError, ValueError, IndexError):
        return False


class SettlingS3:
    """An S3 client whose control.json writes the trainers act on at once, within the same instant:
    a real trainer checkpoints seconds after the request, which a poll as long as a market tick
    would otherwise stretch to a whole tick. Everything else goes to `client` unchanged."""

    def __init__(self, client, clock: LockstepClock) -> None:
        self._client = client
        self._clock = clock

    def put_object(self, **kwargs):
        result = self._client.put_object(**kwargs)
        if str(kwargs.get("Key", "")).endswith("/control.json"):
            self._clock.settle()
        return result

    def __getattr__(self, name: str):
        return getattr(self._client, name)
