"""Polling helper for tests that wait on another process or thread."""

from __future__ import annotations

import time


def wait_for(predicate, timeout_s: float = 15.0, what: str = "condition", poll_s: float = 0.05):
    """The first truthy value of `predicate()` within `timeout_s`, else an AssertionError naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
