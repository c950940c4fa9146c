"""training.checkpoint.BackgroundUploader: a failed publish is retried; a periodic checkpoint that
still fails lets training go on (LATEST keeps naming the previous one); an urgent one fails the run.
Periodic uploads ask the store for background transfers, urgent ones do not."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import os
import sys
import threading
import time

import pytest

from training.checkpoint import BackgroundUploader, Snapshot, lower_thread_priority
from training.contract import LATEST, CheckpointManifest, load_json
from training.storage import LocalStore


class FailingStore(LocalStore):
    """Fault injection (no real S3 error can be produced on demand): the first `failures` puts of
    a checkpoint's files raise, as a 500 from S3 would after botocore's own retries. Records the
    `background` flag of every put."""

    def __init__(self, root: Path, failures: int):
        super().__init__(root)
        object.__setattr__(self, "state", {"failures": failures, "background": []})

    def put_bytes(self, key, data, *, background=False):
        self.state["background"].append((key, background))
        if key.endswith(".safetensors") and self.state["failures"] > 0:
            self.state["failures"] -= 1
            raise OSError("injected: InternalError from S3")
        super().put_bytes(key, data, background=background)


def snapshot(step: int, urgent: bool = False) -> Snapshot:
    return Snapshot(step, {"model.safetensors": b"w" * 1000 + bytes([step]), "trainer_state.json": b"{}"},
                    urgent=urgent)


def publish(store, *snapshots: Snapshot) -> BackgroundUploader:
    uploader = BackgroundUploader(store, keep=2, now=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    try:
        for snap in snapshots:
            uploader.submit(snap)
        uploader.wait()
    finally:
        uploader.close()
    return uploader


def latest_step(store: LocalStore) -> int | None:
    manifest = load_json(store, LATEST, CheckpointManifest)
    return None if manifest is None else manifest.step


def test_a_failed_upload_is_tried_again_and_the_checkpoint_is_published(tmp_path):
    store = FailingStore(tmp_path, failures=1)
    uploader = publish(store, snapshot(5))
    assert latest_step(store) == 5 and uploader.failed_steps == []
    assert (tmp_path / "checkpoints/step-5/model.safetensors").read_bytes() == b"w" * 1000 + bytes([5])


class SlowSecondFileStore(FailingStore):
    """Fault injection as above, and the small file's put of the failed attempt is still running
    when the big file's fails (a slow PUT); records every put of a key that overlaps another."""

    def __init__(self, root: Path, failures: int):
        super().__init__(root, failures)
        self.state.update(in_flight=set(), overlaps=[], slowed=False, lock=threading.Lock())

    def put_bytes(self, key, data, *, background=False):
        with self.state["lock"]:
            if key in self.state["in_flight"]:
                self.state["overlaps"].append(key)
            self.state["in_flight"].add(key)
            slow = key.endswith("trainer_state.json") and not self.state["slowed"]
            self.state["slowed"] |= slow
        try:
            if slow:
                time.sleep(0.5)
            super().put_bytes(key, data, background=background)
        finally:
            with self.state["lock"]:
                self.state["in_flight"].discard(key)


def test_a_retry_waits_for_every_upload_of_the_failed_attempt(tmp_path):
    store = SlowSecondFileStore(tmp_path, failures=1)
    uploader = publish(store, snapshot(5))
    assert store.state["overlaps"] == []
    assert latest_step(store) == 5 and uploader.failed_steps == []


def test_a_periodic_checkpoint_that_keeps_failing_does_not_stop_training(tmp_path, caplog):
    store = FailingStore(tmp_path, failures=0)
    publish(store, snapshot(5))
    store.state["failures"] = 2  # step 10 fails twice: both attempts
    uploader = publish(store, snapshot(10))  # no exception: training would go on
    assert uploader.failed_steps == [10]
    assert latest_step(store) == 5  # still the previous complete checkpoint
    assert "step-10 could not be uploaded" in caplog.text


def test_an_urgent_checkpoint_that_keeps_failing_reaches_the_training_thread(tmp_path):
    store = FailingStore(tmp_path, failures=2)
    with pytest.raises(RuntimeError, match="checkpoint upload failed: injected"):
        publish(store, snapshot(7, urgent=True))
    assert latest_step(store) is None


def test_periodic_uploads_are_background_transfers_and_urgent_ones_are_not(tmp_path):
    store = FailingStore(tmp_path, failures=0)
    publish(store, snapshot(5), snapshot(6, urgent=True))
    flags = dict(store.state["background"])
    assert flags["checkpoints/step-5/model.safetensors"] is True
    assert flags["checkpoints/step-6/model.safetensors"] is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_lowered_priority_applies_to_the_thread_and_the_threads_it_starts_not_the_process():
    seen = {}

    def child():
        seen["child"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def uploader():
        me = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, me)
        seen["lowered"] = lower_thread_priority(5)
        seen["after"] = os.getpriority(os.PRIO_PROCESS, me) - before
        started = threading.Thread(target=child)
        started.start()
        started.join()
        seen["child"] -= before

    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = threading.Thread(target=uploader)
    thread.start()
    thread.join()
    assert seen["lowered"] is True
    assert seen["after"] == min(5, 19 - main_before) and seen["child"] == seen["after"]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before


class NiceRecordingStore(LocalStore):
    """Records the nice value of the thread that uploads each checkpoint file."""

    def __init__(self, root: Path):
        super().__init__(root)
        object.__setattr__(self, "nice", {})

    def put_bytes(self, key, data, *, background=False):
        self.nice[key] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        super().put_bytes(key, data, background=background)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_periodic_uploads_run_at_lower_priority_and_a_stop_s_at_the_trainer_s(tmp_path):
    """A stop's checkpoint races the notice while the training thread waits: it must not queue
    behind every other process of the machine."""
    from training.checkpoint import UPLOAD_NICENESS

    store = NiceRecordingStore(tmp_path)
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    publish(store, snapshot(5), snapshot(6, urgent=True))
    assert store.nice["checkpoints/step-5/model.safetensors"] == min(19, mine + UPLOAD_NICENESS)
    assert store.nice["checkpoints/step-6/model.safetensors"] == mine
