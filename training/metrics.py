"""metrics.jsonl: the loss curve, one MetricsRecord per line, rewritten whole (object stores have
no append) by a background thread whenever records were added, and once more at the end."""

from __future__ import annotations

import logging
import threading

from training.contract import METRICS, MetricsRecord, parse_metrics
from training.storage import ObjectStore

log = logging.getLogger("training.metrics")


class MetricsLog:
    """The records of this job; on resume, those of the steps it trains again are dropped."""

    def __init__(self, store: ObjectStore | None, resumed_at_step: int | None):
        """The earlier records are read by the first write (off the training thread's start-up)."""
        self._store, self._resumed_at = store, resumed_at_step
        self._earlier: list[bytes] | None = None if resumed_at_step is not None else []
        self._lines: list[bytes] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._written = -1  # the first write always happens: a fresh run empties an old document
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, record: MetricsRecord) -> None:
        with self._lock:
            self._lines.append(record.model_dump_json(exclude_none=True).encode())

    def flush(self) -> None:
        """Write the document if it changed since the last write (a fresh run empties an old one)."""
        if self._store is None:
            return
        with self._write_lock:  # one writer at a time: the background thread, or a flush at the end
            if self._earlier is None:
                kept = [r for r in parse_metrics(self._store.get_bytes(METRICS)) if r.step <= self._resumed_at]
                self._earlier = [r.model_dump_json(exclude_none=True).encode() for r in kept]
            with self._lock:
                if len(self._lines) == self._written:
                    return
                lines, count = self._earlier + self._lines, len(self._lines)
            document = b"".join(line + b"\n" for line in lines)
            self._store.put_bytes(METRICS, document)
            self._written = count

    def start(self, interval_s: float) -> "MetricsLog":
        def run() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.flush()
                except Exception as exc:  # the next interval tries again
                    log.warning("metrics write failed: %s", exc.__class__.__name__)

        if self._store is not None:
            self._thread = threading.Thread(target=run, name="metrics", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()
