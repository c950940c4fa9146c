"""Checkpoints: save the full training state locally, upload it in the background to
checkpoints/step-<N>/ with LATEST.json written last, keep the newest K, and restore with
size/sha256 verification and fallback to the previous complete checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import random
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from training.contract import (
    LATEST, CheckpointManifest, ManifestFile, checkpoint_prefix, load_json, save_json, step_of_key,
)
from training.storage import ObjectStore

log = logging.getLogger("training.checkpoint")

MANIFEST = "manifest.json"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
RNG_FILE = "rng.pt"
_HASH_CHUNK = 8 * 1024 * 1024


class CheckpointCorrupt(Exception):
    """A checkpoint's files do not match its manifest (missing, truncated, or altered)."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# -- training state <-> local directory -------------------------------------------------------


def capture_rng() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_local(directory: Path, model, tokenizer, optimizer, scheduler, trainer_state: dict) -> list[Path]:
    """Write weights (safetensors, save_pretrained layout), optimizer, scheduler, RNG and the
    trainer state (step, data position, ...) into `directory`; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    torch.save(optimizer.state_dict(), directory / OPTIMIZER_FILE)
    torch.save(scheduler.state_dict(), directory / SCHEDULER_FILE)
    torch.save(capture_rng(), directory / RNG_FILE)
    (directory / STATE_FILE).write_text(json.dumps(trainer_state, indent=1))
    return sorted(p for p in directory.rglob("*") if p.is_file())


def load_training_state(directory: Path, optimizer, scheduler) -> dict:
    """Restore optimizer and scheduler from a verified local checkpoint; returns the trainer state.
    RNG is returned (under "rng"), not applied: the caller restores it right before the next step."""
    optimizer.load_state_dict(torch.load(directory / OPTIMIZER_FILE, weights_only=True))
    scheduler.load_state_dict(torch.load(directory / SCHEDULER_FILE, weights_only=True))
    state = json.loads((directory / STATE_FILE).read_text())
    state["rng"] = torch.load(directory / RNG_FILE, weights_only=False)
    return state


# -- upload, manifest, retention --------------------------------------------------------------


def build_manifest(step: int, local_dir: Path, created_at: datetime, workers: int = 4) -> CheckpointManifest:
    """Hash every file of a local checkpoint (in parallel) into a manifest keyed under step-<N>/."""
    files = sorted(p for p in local_dir.rglob("*") if p.is_file() and p.name != MANIFEST)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        digests = list(pool.map(sha256_file, files))
    prefix = checkpoint_prefix(step)
    entries = [
        ManifestFile(key=prefix + p.relative_to(local_dir).as_posix(), size=p.stat().st_size, sha256=d)
        for p, d in zip(files, digests)
    ]
    return CheckpointManifest(step=step, files=entries, created_at=created_at)


def publish_checkpoint(
    store: ObjectStore, step: int, local_dir: Path, now: Callable[[], datetime], workers: int = 4
) -> CheckpointManifest:
    """Upload a local checkpoint, then step-<N>/manifest.json, then LATEST.json (last)."""
    manifest = build_manifest(step, local_dir, now(), workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        uploads = [
            pool.submit(store.upload_file, local_dir / f.key[len(checkpoint_prefix(step)):], f.key)
            for f in manifest.files
        ]
        for upload in uploads:
            upload.result()
    save_json(store, checkpoint_prefix(step) + MANIFEST, manifest)
    save_json(store, LATEST, manifest)
    return manifest


def steps_to_delete(stored_steps: set[int], complete_steps: set[int], keep: int) -> list[int]:
    """Checkpoint steps older than the newest `keep` complete ones (partial ones included)."""
    kept = sorted(complete_steps, reverse=True)[:keep]
    if len(kept) < keep or not kept:
        return []
    oldest_kept = kept[-1]
    return sorted(s for s in stored_steps if s < oldest_kept)


def prune_checkpoints(store: ObjectStore, keep: int) -> list[int]:
    """Delete all but the newest `keep` complete checkpoints; returns the deleted steps."""
    keys = store.list_keys("checkpoints/step-")
    by_step: dict[int, list[str]] = {}
    for key in keys:
        step = step_of_key(key)
        if step is not None:
            by_step.setdefault(step, []).append(key)
    complete = {s for s, ks in by_step.items() if checkpoint_prefix(s) + MANIFEST in ks}
    doomed = steps_to_delete(set(by_step), complete, keep)
    store.delete_keys([k for s in doomed for k in by_step[s]])
    return doomed


class BackgroundUploader:
    """Publishes checkpoints on a worker thread so training continues while they upload.
    Checkpoints go out in order; `wait()` blocks until all submitted ones are durable."""

    def __init__(self, store: ObjectStore, keep: int, now: Callable[[], datetime],
                 on_published: Callable[[CheckpointManifest], None] = lambda m: None):
        self._store, self._keep, self._now, self._on_published = store, keep, now, on_published
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="checkpoint-upload", daemon=True)
        self._thread.start()

    def submit(self, step: int, local_dir: Path) -> None:
        self.raise_if_failed()
        self._queue.put((step, local_dir))

    def wait(self) -> None:
        self._queue.join()
        self.raise_if_failed()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"checkpoint upload failed: {self._error}") from self._error

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            step, local_dir = item
            try:
                if self._error is None:
                    manifest = publish_checkpoint(self._store, step, local_dir, self._now)
                    prune_checkpoints(self._store, self._keep)
                    self._on_published(manifest)
            except BaseException as exc:  # surfaced to the training thread by raise_if_failed
                self._error = exc
            finally:
                shutil.rmtree(local_dir, ignore_errors=True)
                self._queue.task_done()
        self._queue.task_done()


# -- restore -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Restored:
    manifest: CheckpointManifest
    directory: Path


def candidate_manifests(store: ObjectStore) -> list[CheckpointManifest]:
    """LATEST first, then every other step-<N>/manifest.json, newest first."""
    found: dict[int, CheckpointManifest] = {}
    latest = load_json(store, LATEST, CheckpointManifest)
    for key in store.list_keys("checkpoints/step-"):
        step = step_of_key(key)
        if step is not None and key == checkpoint_prefix(step) + MANIFEST and step not in found:
            manifest = load_json(store, key, CheckpointManifest)
            found[manifest.step] = manifest
    ordered = sorted(found.values(), key=lambda m: m.step, reverse=True)
    if latest is not None:
        ordered = [latest] + [m for m in ordered if m.step != latest.step]
    return ordered


def download_verified(store: ObjectStore, manifest: CheckpointManifest, target: Path, workers: int = 8) -> Path:
    """Download a checkpoint's files into target and check sizes and sha256; raises CheckpointCorrupt."""
    prefix = checkpoint_prefix(manifest.step)

    def fetch(entry: ManifestFile) -> None:
        path = target / entry.key[len(prefix):]
        try:
            store.download_file(entry.key, path)
        except FileNotFoundError as exc:
            raise CheckpointCorrupt(f"{entry.key}: missing") from exc
        size = path.stat().st_size
        if size != entry.size:
            raise CheckpointCorrupt(f"{entry.key}: {size} bytes, manifest says {entry.size}")
        if sha256_file(path) != entry.sha256:
            raise CheckpointCorrupt(f"{entry.key}: sha256 differs from the manifest")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for result in [pool.submit(fetch, e) for e in manifest.files]:
            result.result()
    return target


def fetch_latest_complete(store: ObjectStore, scratch: Path) -> Restored | None:
    """The newest checkpoint whose files match its manifest, downloaded into scratch; None if none.
    A corrupt or partial one is skipped with a warning."""
    for manifest in candidate_manifests(store):
        target = scratch / f"restore-step-{manifest.step}"
        try:
            return Restored(manifest, download_verified(store, manifest, target))
        except CheckpointCorrupt as exc:
            log.warning("checkpoint step-%d is unusable (%s); trying the previous one", manifest.step, exc)
            shutil.rmtree(target, ignore_errors=True)
    return None
