"""Why the trainer should stop early: SIGTERM, the EC2 spot instance-action notice (IMDSv2), or a
control.json request. Each source sets one StopFlag; the training loop checks it between steps.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import urllib.error
import urllib.request
from typing import Callable

from training.contract import CONTROL, ControlRequest, load_json
from training.storage import ObjectStore

log = logging.getLogger("training.stopping")

IMDS_TOKEN_TTL_S = 21600


class StopFlag:
    """Set once, by whichever source comes first; remembers why (and the control request id)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None
        self.request_id: str | None = None

    def set(self, reason: str, request_id: str | None = None) -> None:
        if not self._event.is_set():
            self.reason, self.request_id = reason, request_id
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


def install_sigterm(flag: StopFlag) -> None:
    """SIGTERM (and SIGINT) ask for checkpoint-and-exit after the current step. Main thread only."""
    def handler(signum, _frame):
        flag.set("sigterm" if signum == signal.SIGTERM else "sigint")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def spot_interruption_notice(endpoint: str, timeout_s: float = 1.0) -> dict | None:
    """The spot instance-action notice ({"action": "terminate", "time": ...}) or None (IMDSv2).
    Unreachable metadata counts as no notice: the poller keeps trying."""
    base = endpoint.rstrip("/")
    try:
        token_request = urllib.request.Request(
            f"{base}/latest/api/token", method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(IMDS_TOKEN_TTL_S)},
        )
        with urllib.request.urlopen(token_request, timeout=timeout_s) as response:
            token = response.read().decode()
        action_request = urllib.request.Request(
            f"{base}/latest/meta-data/spot/instance-action", headers={"X-aws-ec2-metadata-token": token},
        )
        with urllib.request.urlopen(action_request, timeout=timeout_s) as response:
            return json.loads(response.read().decode())
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            log.warning("IMDS answered %d while polling the spot notice", exc.code)
        return None
    except (urllib.error.URLError, TimeoutError, ValueError) as exc:
        log.warning("IMDS unreachable while polling the spot notice: %s", exc)
        return None


def pending_control(store: ObjectStore, honoured_request_id: str | None) -> ControlRequest | None:
    """The control.json request, unless it is the one already honoured (by this or an earlier run)."""
    # Requests per poll: one GET while control.json exists (an honoured request stays there). While
    # it does not, one GET (404) where the caller may list the bucket; on AWS with the trainer's role
    # (ListBucket only under a prefix condition) the GET's 403 plus one ListObjectsV2 to confirm the
    # absence (training.missing_keys). At the 2 s default poll that is 43,200 LISTs a day, about
    # $0.22 at us-east-1's $0.005 per 1,000 (GETs: $0.0004 per 1,000).
    request = load_json(store, CONTROL, ControlRequest)
    if request is None or request.request_id == honoured_request_id:
        return None
    return request


class Poller:
    """Runs `check` every `interval_s` on a daemon thread until stopped or check returns True."""

    def __init__(self, name: str, interval_s: float, check: Callable[[], bool]):
        self._stop = threading.Event()
        self._interval_s, self._check = interval_s, check
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "Poller":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._check():
                    return
            except Exception as exc:  # one failed poll (S3 hiccup) must not end the watch
                log.warning("%s poll failed: %s", self._thread.name, exc.__class__.__name__)
            self._stop.wait(self._interval_s)


def watch_spot_notice(endpoint: str, flag: StopFlag, interval_s: float = 2.0) -> Poller:
    def check() -> bool:
        notice = spot_interruption_notice(endpoint)
        if notice is not None:
            log.warning("spot interruption notice: %s", notice)
            flag.set("spot_notice")
        return notice is not None

    return Poller("spot-notice", interval_s, check).start()


def watch_control(store: ObjectStore, flag: StopFlag, honoured_request_id: str | None, interval_s: float) -> Poller:
    def check() -> bool:
        request = pending_control(store, honoured_request_id)
        if request is not None:
            log.warning("control request %s: %s", request.request_id, request.action)
            flag.set("control", request.request_id)
        return request is not None

    return Poller("control", interval_s, check).start()
