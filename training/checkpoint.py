"""Checkpoints: snapshot the training state into reusable in-memory buffers (the only work on the
training thread), then hash and upload it in the background to checkpoints/step-<N>/ with
LATEST.json written last; keep the newest K; restore with size/sha256 verification and fallback to
the previous complete checkpoint.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import queue
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from training.adapters import WEIGHTS_FILE, weights_file, weights_to_save  # noqa: F401 (WEIGHTS_FILE: re-export)
from training.contract import (
    LATEST, CheckpointManifest, ManifestFile, checkpoint_prefix, load_json, save_json, step_of_key,
)
from training.storage import ObjectStore
from training.tensor_pack import host_buffer, pack, plan_layout, views
from training.versions import running_versions

log = logging.getLogger("training.checkpoint")

MANIFEST = "manifest.json"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"  # the optimizer's state_dict with its tensors replaced by names
OPTIMIZER_TENSORS_FILE = "optimizer.safetensors"  # ... and those tensors
SCHEDULER_FILE = "scheduler.pt"
RNG_FILE = "rng.pt"
SCALER_FILE = "scaler.pt"  # fp16's loss scale
_TENSOR_REF = "tensor:"


class CheckpointCorrupt(Exception):
    """A checkpoint's files do not match its manifest (missing, truncated, or altered)."""

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step


def sha256_bytes(data) -> str:
    return hashlib.sha256(data).hexdigest()


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


# -- training state -> file contents ------------------------------------------------------------


def capture_rng() -> dict:
    """This process's RNG states (python, numpy, torch CPU, and its own GPU's when it has one)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def rng_file(per_rank: list[dict]) -> bytes:
    """rng.pt: every rank's RNG state, in rank order."""
    return _torch_bytes({"ranks": per_rank})


def scaler_file(scaler) -> bytes:
    """scaler.pt: fp16's loss scale and its growth tracker."""
    return _torch_bytes(scaler.state_dict())


def rng_of_rank(saved: dict, rank: int) -> dict | None:
    """The RNG state rank `rank` saved, or None when the checkpoint came from fewer ranks. A
    checkpoint of one process before per-rank states holds that process's state itself."""
    ranks = saved["ranks"] if "ranks" in saved else [saved]
    return ranks[rank] if rank < len(ranks) else None


def restore_rng(state: dict) -> None:
    """Restore one rank's RNG; the GPU state only where this process has a GPU (an old
    all-devices list gives its first entry)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda[0] if isinstance(cuda, (list, tuple)) else cuda)


def model_static_files(model, tokenizer) -> dict[str, bytes]:
    """What save_pretrained writes besides the weights (config, generation config, tokenizer):
    it does not change during training, so it is rendered once per run."""
    with tempfile.TemporaryDirectory(prefix="spotshift-static-") as tmp:
        directory = Path(tmp)
        model.config.save_pretrained(directory)
        if getattr(model, "generation_config", None) is not None and model.can_generate():
            model.generation_config.save_pretrained(directory)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
        return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def split_optimizer_state(state_dict: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    """An optimizer state_dict as (skeleton with each tensor replaced by its name, the tensors)."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton_state = {}
    for index, entries in state_dict["state"].items():
        skeleton_state[index] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                name = f"state.{index}.{key}"
                tensors[name] = value
                value = _TENSOR_REF + name
            skeleton_state[index][key] = value
    return {"state": skeleton_state, "param_groups": state_dict["param_groups"]}, tensors


def join_optimizer_state(skeleton: dict, tensors: dict[str, torch.Tensor]) -> dict:
    """The inverse of split_optimizer_state."""
    def resolve(value):
        if isinstance(value, str) and value.startswith(_TENSOR_REF):
            return tensors[value[len(_TENSOR_REF):]]
        return value

    state = {index: {k: resolve(v) for k, v in entries.items()} for index, entries in skeleton["state"].items()}
    return {"state": state, "param_groups": skeleton["param_groups"]}


@dataclass
class Snapshot:
    """One checkpoint's files, ready to upload: the big ones live in buffers borrowed from the
    SnapshotTaker until the upload is done."""

    step: int
    files: dict[str, bytes | memoryview]
    buffers: list = field(default_factory=list)  # bytearrays or pinned host buffers
    urgent: bool = False  # taken on a stop: upload at full speed, and a failure fails the run

    @property
    def total_bytes(self) -> int:
        return sum(len(data) for data in self.files.values())


_HEADER_ALLOWANCE = 256  # bytes of safetensors header per tensor, for reserved buffers
_PAGE = 4096


class SnapshotTaker:
    """Takes snapshots on the training thread: one copy of the weights and optimizer tensors into
    safetensors-laid-out buffers that are reused once their upload is done (no allocation, no
    page faults in steady state). Everything else is small."""

    def __init__(self, static_files: dict[str, bytes] | None = None):
        self._static = dict(static_files or {})
        self._free: list = []
        self._lock = threading.Lock()
        self._reserving: threading.Thread | None = None

    def set_static_files(self, static_files: dict[str, bytes]) -> None:
        self._static = dict(static_files)

    def take(self, step: int, model, optimizer, scheduler, trainer_state: dict, urgent: bool = False,
             small_files: dict[str, bytes] | None = None, full_state: tuple[dict, dict] | None = None) -> Snapshot:
        """`small_files` (rng.pt of every rank, scaler.pt) replace what this process would render;
        `full_state`: the model's and optimizer's state dicts gathered from shards (FSDP)."""
        if self._reserving is not None:
            self._reserving.join()
        model_state, optimizer_state = full_state or (None, optimizer.state_dict())
        skeleton, optimizer_tensors = split_optimizer_state(optimizer_state)
        files: dict[str, bytes | memoryview] = dict(self._static)
        buffers = []
        for name, tensors, metadata in (
            (weights_file(model), weights_to_save(model, model_state), {"format": "pt"}),
            (OPTIMIZER_TENSORS_FILE, optimizer_tensors, {}),
        ):
            layout = plan_layout(tensors, metadata)
            buffer = self._borrow(layout.size, pinned=any(t.is_cuda for t in tensors.values()))
            files[name] = pack(tensors, layout, buffer)
            buffers.append(buffer)
        files[OPTIMIZER_FILE] = _torch_bytes(skeleton)
        files[SCHEDULER_FILE] = _torch_bytes(scheduler.state_dict())
        files[RNG_FILE] = _torch_bytes(capture_rng())
        files[STATE_FILE] = json.dumps(trainer_state, indent=1).encode()
        files.update(small_files or {})
        return Snapshot(step, files, buffers, urgent)

    def reserve(self, model, background: bool = False) -> None:
        """Allocate and touch the buffers of the first snapshot (weights, and AdamW's two moments
        per trainable parameter) ahead of it, so that the first checkpoint does not pay for fresh
        memory's page faults on the training thread. `background`: on a thread of lower priority,
        off the start-up path (the first snapshot waits for it, should it come that early)."""
        weights = weights_to_save(model)
        weight_bytes = sum(t.numel() * t.element_size() for t in weights.values())
        moment_bytes = 2 * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        pinned = any(t.is_cuda for t in weights.values())
        sizes = [size + _HEADER_ALLOWANCE * (1 + count)
                 for size, count in ((weight_bytes, len(weights)), (moment_bytes, 3 * len(weights)))]

        def allocate() -> None:
            if background:
                lower_thread_priority(UPLOAD_NICENESS)
            for size in sizes:
                buffer = host_buffer(size, pinned)
                if isinstance(buffer, bytearray):  # calloc'ed: its pages are mapped on first write
                    memoryview(buffer)[::_PAGE] = bytes(len(range(0, len(buffer), _PAGE)))
                with self._lock:
                    self._free.append(buffer)

        if background:
            self._reserving = threading.Thread(target=allocate, name="checkpoint-reserve", daemon=True)
            self._reserving.start()
        else:
            allocate()

    def release(self, snapshot: Snapshot) -> None:
        """Give a published snapshot's buffers back for the next one."""
        snapshot.files.clear()
        with self._lock:
            self._free.extend(snapshot.buffers)
        snapshot.buffers.clear()

    def _borrow(self, size: int, pinned: bool = False):
        with self._lock:
            fitting = [b for b in self._free if len(b) >= size]
            if fitting:
                buffer = min(fitting, key=len)
                self._free = [b for b in self._free if b is not buffer]
                return buffer
        return host_buffer(size, pinned)


def training_state_from_files(files: dict, optimizer, scheduler, scaler=None, load_optimizer=None) -> dict:
    """Restore optimizer, scheduler (and the fp16 loss scaler) from a checkpoint's files (in
    memory); returns the trainer state. RNG is returned (under "rng": every rank's), not applied:
    the caller restores its own right before the next step."""
    state = small_state_from_files(files, scheduler, scaler)
    optimizer_from_files(files, optimizer, load_optimizer)
    return state


def small_state_from_files(files: dict, scheduler, scaler=None) -> dict:
    """Everything but the optimizer: the schedule, the loss scale, and the trainer state (with
    every rank's RNG under "rng")."""
    scheduler.load_state_dict(torch.load(io.BytesIO(files[SCHEDULER_FILE]), weights_only=True))
    if scaler is not None and SCALER_FILE in files:
        scaler.load_state_dict(torch.load(io.BytesIO(files[SCALER_FILE]), weights_only=True))
    state = json.loads(bytes(files[STATE_FILE]))
    state["rng"] = torch.load(io.BytesIO(files[RNG_FILE]), weights_only=False)
    return state


def optimizer_state_by_name(files: dict) -> bool:
    """Whether the checkpoint's optimizer state is keyed by parameter name (gathered from FSDP
    shards) rather than by index (one replica's optimizer.state_dict())."""
    skeleton = torch.load(io.BytesIO(files[OPTIMIZER_FILE]), weights_only=True)
    return any(isinstance(key, str) for key in skeleton["state"])


def optimizer_from_files(files: dict, optimizer, load_optimizer=None) -> None:
    """The optimizer's state; its tensors are views of the downloaded buffer (no copy).
    `load_optimizer(state_dict)` replaces optimizer.load_state_dict (FSDP: a full state dict
    sharded into this rank's optimizer)."""
    skeleton = torch.load(io.BytesIO(files[OPTIMIZER_FILE]), weights_only=True)
    tensors, _ = views(files[OPTIMIZER_TENSORS_FILE])
    (load_optimizer or optimizer.load_state_dict)(join_optimizer_state(skeleton, tensors))


# -- upload, manifest, retention --------------------------------------------------------------


def publish_snapshot(store: ObjectStore, snapshot: Snapshot, now: Callable[[], datetime],
                     pool: ThreadPoolExecutor) -> CheckpointManifest:
    """Hash and upload a snapshot's files (all at once, hashing alongside the uploads), then
    step-<N>/manifest.json, then LATEST.json (last); the manifest records the library versions."""
    prefix = checkpoint_prefix(snapshot.step)
    names = sorted(snapshot.files, key=lambda n: -len(snapshot.files[n]))  # biggest first
    digests = {name: pool.submit(sha256_bytes, snapshot.files[name]) for name in names}
    uploads = [pool.submit(store.put_bytes, prefix + name, snapshot.files[name], background=not snapshot.urgent)
               for name in names]
    # Every hash and upload of this attempt ends before a failure is raised: a retry, or the next
    # snapshot reusing these buffers, must never race a read or a write still running from it.
    wait([*digests.values(), *uploads])
    for upload in uploads:
        upload.result()
    entries = [ManifestFile(key=prefix + name, size=len(snapshot.files[name]), sha256=digests[name].result())
               for name in sorted(names)]
    manifest = CheckpointManifest(step=snapshot.step, files=entries, created_at=now(), versions=running_versions())
    save_json(store, prefix + MANIFEST, manifest)
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


UPLOAD_NICENESS = 10


def lower_thread_priority(increment: int) -> bool:
    """Run the calling thread, and the threads it goes on to start (they inherit it), at a lower
    CPU priority, so that on a small instance a background upload takes CPU only when the training
    thread does not need it. Linux only, where each thread has its own nice value; elsewhere (and
    where it is refused) nothing changes. Returns whether it was lowered."""
    if increment <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
        return True
    except OSError as exc:
        log.debug("could not lower the upload threads' priority: %s", exc)
        return False


class BackgroundUploader:
    """Publishes snapshots on a worker thread so training continues while they upload.
    Checkpoints go out in order; `wait()` blocks until all submitted ones are durable (older ones
    are deleted after that, `close()` waits for it). A failed
    publish is tried once more; if a periodic checkpoint still fails, training goes on (LATEST
    still names the previous complete checkpoint, and the next one tries again) with a warning;
    if an urgent (stop) checkpoint fails, the error reaches the training thread."""

    def __init__(self, store: ObjectStore, keep: int, now: Callable[[], datetime],
                 on_published: Callable[[CheckpointManifest], None] = lambda m: None,
                 on_released: Callable[[Snapshot], None] = lambda s: None, workers: int = 8,
                 clock: Callable[[], float] = time.monotonic):
        self._store, self._keep, self._now, self._clock = store, keep, now, clock
        self._on_published, self._on_released = on_published, on_released
        self.publish_seconds: list[float] = []  # per checkpoint: submitted -> durable
        self.failed_steps: list[int] = []  # periodic checkpoints that could not be published
        # periodic checkpoints upload on threads of lower CPU priority (the threads boto3 starts
        # from them inherit it); a stop's checkpoint races the clock with the training thread idle,
        # so it gets threads of normal priority (a thread cannot raise its priority back)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="checkpoint-io",
                                        initializer=lower_thread_priority, initargs=(UPLOAD_NICENESS,))
        self._urgent_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="checkpoint-io-urgent")
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="checkpoint-upload", daemon=True)
        self._thread.start()

    def submit(self, snapshot: Snapshot) -> None:
        self.raise_if_failed()
        self._queue.put((snapshot, self._clock()))

    def wait(self) -> None:
        self._queue.join()
        self.raise_if_failed()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._pool.shutdown()
        self._urgent_pool.shutdown()

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"checkpoint upload failed: {self._error}") from self._error

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            snapshot, submitted, manifest = *item, None
            try:
                if self._error is None:
                    manifest = self._publish_with_retry(snapshot)
                    if manifest is not None:
                        self.publish_seconds.append(self._clock() - submitted)
                        self._on_published(manifest)
            except BaseException as exc:  # surfaced to the training thread by raise_if_failed
                self._error = exc
            finally:
                self._on_released(snapshot)
                self._queue.task_done()  # durable: wait() returns; old checkpoints go after
            if manifest is not None:
                self._prune()
        self._queue.task_done()

    def _prune(self) -> None:
        try:
            prune_checkpoints(self._store, self._keep)
        except Exception as exc:  # the old checkpoints stay until the next prune
            log.warning("could not delete old checkpoints (%s); the next checkpoint tries again", exc)

    def _publish_with_retry(self, snapshot: Snapshot, attempts: int = 2) -> CheckpointManifest | None:
        for attempt in range(1, attempts + 1):
            try:
                pool = self._urgent_pool if snapshot.urgent else self._pool
                return publish_snapshot(self._store, snapshot, self._now, pool)
            except Exception as exc:
                if attempt < attempts:
                    log.warning("checkpoint step-%d upload failed (%s); trying again", snapshot.step, exc)
                elif snapshot.urgent:
                    raise
                else:
                    log.warning("checkpoint step-%d could not be uploaded (%s); training goes on, the next "
                                "checkpoint tries again", snapshot.step, exc)
                    self.failed_steps.append(snapshot.step)
        return None


# -- restore -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Restored:
    """A verified checkpoint: its files in memory, and on disk in save_pretrained layout
    (config, tokenizer, weights) so that from_pretrained can open `directory`."""

    manifest: CheckpointManifest
    directory: Path
    files: dict[str, memoryview]


def candidate_manifests(store: ObjectStore) -> Iterator[CheckpointManifest]:
    """LATEST first, then every other step-<N>/manifest.json, newest first. Lazy: a resume from
    LATEST reads nothing else (no listing)."""
    latest = load_json(store, LATEST, CheckpointManifest)
    if latest is not None:
        yield latest
    found: dict[int, CheckpointManifest] = {}
    for key in store.list_keys("checkpoints/step-"):
        step = step_of_key(key)
        if step is not None and key == checkpoint_prefix(step) + MANIFEST and step not in found:
            manifest = load_json(store, key, CheckpointManifest)
            found[manifest.step] = manifest
    yield from (m for m in sorted(found.values(), key=lambda m: m.step, reverse=True)
                if latest is None or m.step != latest.step)


def _fetch_verified(store: ObjectStore, entry: ManifestFile) -> memoryview:
    """One checkpoint file in memory, checked against its manifest entry; raises CheckpointCorrupt."""
    step = step_of_key(entry.key)
    try:
        data = store.get_buffer(entry.key)
    except FileNotFoundError as exc:
        raise CheckpointCorrupt(f"{entry.key}: missing", step) from exc
    if len(data) != entry.size:
        raise CheckpointCorrupt(f"{entry.key}: {len(data)} bytes, manifest says {entry.size}", step)
    if sha256_bytes(data) != entry.sha256:
        raise CheckpointCorrupt(f"{entry.key}: sha256 differs from the manifest", step)
    return data


def download_verified(store: ObjectStore, manifest: CheckpointManifest, workers: int = 8) -> dict[str, memoryview]:
    """A checkpoint's files, downloaded into memory in parallel and checked against the manifest's
    sizes and sha256 (each file as soon as it arrives); raises CheckpointCorrupt."""
    prefix = checkpoint_prefix(manifest.step)
    biggest_first = sorted(manifest.files, key=lambda e: -e.size)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        fetched = [(entry, pool.submit(_fetch_verified, store, entry)) for entry in biggest_first]
        return {entry.key[len(prefix):]: result.result() for entry, result in fetched}


_TRAINING_ONLY = {OPTIMIZER_FILE, OPTIMIZER_TENSORS_FILE, SCHEDULER_FILE, RNG_FILE, SCALER_FILE, STATE_FILE}


def write_model_files(files: dict, directory: Path) -> Path:
    """The save_pretrained part of a checkpoint (config, tokenizer, weights) into `directory`."""
    for name, data in files.items():
        if name not in _TRAINING_ONLY:
            path = directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return directory


DEFERRED = (OPTIMIZER_TENSORS_FILE,)  # needed by the first optimizer update only, not by the model


class Restoring:
    """A checkpoint arriving in two parts, each verified: first the model's files and the small
    training state (the model loads, the first forward and backward run), then the optimizer's
    tensors (about two thirds of a full checkpoint), needed only by the first optimizer update."""

    def __init__(self, store: ObjectStore, manifest: CheckpointManifest, scratch: Path, workers: int = 8):
        self.manifest, self.directory = manifest, scratch / f"restore-step-{manifest.step}"
        self._prefix = checkpoint_prefix(manifest.step)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="checkpoint-restore")
        early = [e for e in manifest.files if self._name(e) not in DEFERRED]
        self._early = self._submit(store, early)
        later = [e for e in manifest.files if self._name(e) in DEFERRED]
        self._later = self._pool.submit(self._after_early, store, later)

    def _name(self, entry: ManifestFile) -> str:
        return entry.key[len(self._prefix):]

    def _submit(self, store, entries) -> dict:
        biggest_first = sorted(entries, key=lambda e: -e.size)
        return {self._name(e): self._pool.submit(_fetch_verified, store, e) for e in biggest_first}

    def _after_early(self, store, entries) -> dict[str, memoryview]:
        for future in self._early.values():  # the model's bytes first: they are needed first
            future.exception()
        return {name: future.result() for name, future in self._submit(store, entries).items()}

    def early_files(self) -> dict[str, memoryview]:
        return {name: future.result() for name, future in self._early.items()}

    def model_directory(self) -> Path:
        """The save_pretrained part (config, tokenizer, weights) on disk, once verified."""
        return write_model_files(self.early_files(), self.directory)

    def files(self) -> dict[str, memoryview]:
        """Every file of the checkpoint, verified (waits for the optimizer's tensors)."""
        return self.early_files() | self._later.result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def start_restore(store: ObjectStore, scratch: Path, skip: set[int] = frozenset(),
                  vet: Callable[[CheckpointManifest], None] = lambda manifest: None) -> Restoring | None:
    """Start downloading the newest checkpoint whose step is not in `skip`; None if there is none.
    `vet(manifest)` runs first and may refuse the checkpoint by raising (nothing is downloaded then)."""
    for manifest in candidate_manifests(store):
        if manifest.step not in skip:
            vet(manifest)
            return Restoring(store, manifest, scratch)
    return None


def fetch_latest_complete(store: ObjectStore, scratch: Path) -> Restored | None:
    """The newest checkpoint whose files match its manifest; None if there is none.
    A corrupt or partial one is skipped with a warning."""
    skip: set[int] = set()
    while (restoring := start_restore(store, scratch, skip)) is not None:
        try:
            files = restoring.files()
            return Restored(restoring.manifest, restoring.model_directory(), files)
        except CheckpointCorrupt as exc:
            log.warning("checkpoint step-%d is unusable (%s); trying the previous one", restoring.manifest.step, exc)
            skip.add(restoring.manifest.step)
        finally:
            restoring.close()
    return None
