"""progress.json heartbeat: the latest Progress, written on every state change and every few seconds."""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Callable

from training.contract import PROGRESS, Progress, save_json
from training.storage import ObjectStore

log = logging.getLogger("training.heartbeat")


class Heartbeat:
    """Holds the current Progress; `update()` changes it, `publish()` writes it (serialized by a lock)."""

    def __init__(self, store: ObjectStore, initial: Progress, now: Callable[[], datetime], enabled: bool = True):
        """`enabled` False (ranks other than 0): the progress is kept but never written."""
        self._store, self._now, self._enabled = store, now, enabled
        self._progress = initial
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def progress(self) -> Progress:
        return self._progress

    def update(self, publish: bool = False, soon: bool = False, **changes) -> None:
        """Change the progress; `publish`: write it now; `soon`: have the heartbeat thread write it
        now (off the caller's path)."""
        with self._lock:
            self._progress = self._progress.model_copy(update=changes)
            if publish:
                self.publish()
        if soon:
            self._wake.set()

    def publish(self) -> None:
        if not self._enabled:
            return
        with self._lock:
            self._progress = self._progress.model_copy(update={"updated_at": self._now()})
            save_json(self._store, PROGRESS, self._progress)

    def start(self, interval_s: float) -> "Heartbeat":
        def run() -> None:
            while not self._stop.is_set():
                self._wake.wait(interval_s)
                self._wake.clear()
                if self._stop.is_set():
                    return
                try:
                    self.publish()
                except Exception as exc:  # a missed beat is retried at the next interval
                    log.warning("heartbeat write failed: %s", exc.__class__.__name__)

        if self._enabled:
            self._thread = threading.Thread(target=run, name="heartbeat", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
