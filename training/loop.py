"""The training loop: causal-LM fine-tuning with exact resume from S3 checkpoints, background
uploads, and checkpoint-and-exit when a StopFlag is set. Returns the process exit code.

Own loop rather than transformers' Trainer: every piece of state that decides the next step
(weights, AdamW moments, LR schedule, RNG, data position = step * grad_accum) is explicit here,
so a resumed run is bit-identical to an uninterrupted one, and checkpoint uploads run on a
background thread instead of blocking in save_state.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from training.checkpoint import (
    BackgroundUploader, SnapshotTaker, fetch_latest_complete, model_static_files, restore_rng,
    training_state_from_files,
)
from training.contract import FINAL, PROGRESS, Progress, TrainerState, load_json
from training.data import BlockSampler, pack_blocks, parse_corpus
from training.exitcodes import EXIT_CHECKPOINTED, EXIT_DONE, EXIT_FAILED
from training.heartbeat import Heartbeat
from training.model_source import read_dataset_bytes, resolve_model_dir
from training.spec import TrainingSpec
from training.stopping import StopFlag, watch_control, watch_spot_notice
from training.storage import ObjectStore

log = logging.getLogger("training")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class TrainerIO:
    """Everything the loop touches outside the process: storage, scratch disk, clocks."""

    store: ObjectStore
    s3: object | None = None
    scratch: Path | None = None
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = utc_now
    on_step: Callable[[int, float], None] = lambda step, loss: None  # benchmarks hook here


@dataclass
class RunResult:
    exit_code: int
    start_step: int = 0
    final_step: int = 0
    final_loss: float | None = None
    first_step_s: float | None = None  # run start -> end of the first step (resume latency)
    steps_per_s: float | None = None  # steady rate, first step excluded
    stop_reason: str | None = None
    durable_s: float | None = None  # stop noticed at a step boundary -> checkpoint durable
    snapshot_s: list[float] = field(default_factory=list)  # training-thread time per checkpoint
    publish_s: list[float] = field(default_factory=list)  # per checkpoint: snapshot -> durable in S3
    error: str | None = field(default=None, repr=False)


def checkpoint_due(step: int, last_step: int, seconds_since_last: float, spec: TrainingSpec) -> bool:
    """A periodic checkpoint is due after `step` finished steps (never twice for one step)."""
    if step == last_step:
        return False
    by_steps = spec.checkpoint_every_steps is not None and step % spec.checkpoint_every_steps == 0
    by_time = spec.checkpoint_every_seconds is not None and seconds_since_last >= spec.checkpoint_every_seconds
    return by_steps or by_time


def lr_factor(step: int, warmup_steps: int, max_steps: int) -> float:
    """Linear warmup to 1, then linear decay to 0 at max_steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (max_steps - step) / max(1, max_steps - warmup_steps))


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but no CUDA device is available (use 'cpu' or 'auto')")
    return requested


def make_deterministic(device: str = "cpu") -> None:
    """Deterministic kernels, so that a resumed run repeats the uninterrupted one. On a GPU an op
    without a deterministic kernel warns instead of failing the (paid) run."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=device.startswith("cuda"))
    torch.backends.cudnn.benchmark = False


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_training(spec: TrainingSpec, io: TrainerIO, stop: StopFlag) -> RunResult:
    """Train `spec` to max_steps, or until `stop` is set (then checkpoint and return 75)."""
    started = io.clock()
    previous = load_json(io.store, PROGRESS, Progress)
    heartbeat = Heartbeat(io.store, Progress(
        state=TrainerState.starting, step=0, max_steps=spec.max_steps, instance_id=spec.instance_id,
        job_id=spec.job_id, updated_at=io.now(), started_at=io.now(),
        honoured_request_id=previous.honoured_request_id if previous else None,
    ), io.now)
    heartbeat.publish()
    heartbeat.start(spec.heartbeat_seconds)
    pollers = []
    with tempfile.TemporaryDirectory(prefix="spotshift-train-", dir=io.scratch) as scratch_dir:
        scratch = Path(scratch_dir)
        snapshots = SnapshotTaker()
        uploader = BackgroundUploader(
            io.store, spec.keep_checkpoints, io.now,
            on_published=lambda m: heartbeat.update(last_checkpoint_step=m.step),
            on_released=snapshots.release, clock=io.clock,
        )
        try:
            if spec.imds_endpoint:
                pollers.append(watch_spot_notice(spec.imds_endpoint, stop, spec.control_poll_seconds))
            return _train(spec, io, stop, heartbeat, uploader, snapshots, scratch, started, pollers)
        except Exception as exc:
            message = f"{exc.__class__.__name__}: {exc}".splitlines()[0][:500]
            log.exception("training failed")
            heartbeat.update(publish=True, state=TrainerState.failed, error=message)
            return RunResult(EXIT_FAILED, final_step=heartbeat.progress.step, error=message)
        finally:
            for poller in pollers:
                poller.stop()
            heartbeat.stop()
            uploader.close()


def _train(spec, io, stop, heartbeat, uploader, snapshots, scratch, started, pollers) -> RunResult:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device(spec.device)
    make_deterministic(device)
    # start-up overlaps: the dataset downloads while the checkpoint does, and is tokenized (the
    # tokenizers library releases the GIL) while the model and optimizer load
    background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataset")
    raw_dataset = background.submit(read_dataset_bytes, spec.dataset, io.s3)
    restored = fetch_latest_complete(io.store, scratch)
    model_dir = str(restored.directory) if restored else resolve_model_dir(spec.model, scratch, io.s3)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    blocks = background.submit(lambda: pack_blocks(
        tokenizer(parse_corpus(raw_dataset.result(), spec.dataset))["input_ids"], spec.seq_len, tokenizer.eos_token_id))
    background.shutdown(wait=False)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
    snapshots.set_static_files(model_static_files(model, tokenizer))
    snapshots.reserve(model)

    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=spec.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, spec.warmup_steps, spec.max_steps))
    start_step, honoured = 0, heartbeat.progress.honoured_request_id
    resumed = restored is not None
    if resumed:
        state = training_state_from_files(restored.files, optimizer, scheduler)
        del restored  # the optimizer keeps its part of the downloaded bytes; the rest can go
        start_step = state["step"]
        honoured = state.get("honoured_request_id") or honoured
        restore_rng(state["rng"])
        log.info("resumed from checkpoint step-%d", start_step)
    else:
        seed_everything(spec.seed)
    sampler = BlockSampler(blocks.result(), spec.batch_size, spec.seed)
    pollers.append(watch_control(io.store, stop, honoured, spec.control_poll_seconds))
    heartbeat.update(publish=True, state=TrainerState.training, step=start_step,
                     resumed_from_step=start_step if resumed else None,
                     last_checkpoint_step=start_step if resumed else None)

    def checkpoint(step: int, urgent: bool = False) -> None:
        trainer_state = {
            "step": step, "data_position": step * spec.grad_accum, "micro_batch_size": spec.batch_size,
            "seed": spec.seed, "job_id": spec.job_id, "loss": heartbeat.progress.loss,
            "honoured_request_id": stop.request_id or honoured,
        }
        taken = io.clock()
        snapshot = snapshots.take(step, model, optimizer, scheduler, trainer_state, urgent)
        result.snapshot_s.append(io.clock() - taken)
        uploader.submit(snapshot)

    result = RunResult(EXIT_DONE, start_step=start_step, final_step=start_step, publish_s=uploader.publish_seconds)
    last_ckpt_step = start_step if resumed else -1  # -1: no checkpoint yet
    last_ckpt_time = io.clock()
    first_step_end = None
    model.train()
    for step in range(start_step, spec.max_steps):
        if stop.is_set():
            return _stop(spec, io, stop, heartbeat, uploader, checkpoint, step, last_ckpt_step, result)
        t0 = io.clock()
        loss = _train_step(model, optimizer, scheduler, sampler, step, spec, device)
        if spec.min_step_seconds:
            time.sleep(max(0.0, spec.min_step_seconds - (io.clock() - t0)))
        dt = io.clock() - t0
        done = step + 1
        if first_step_end is None:
            first_step_end = io.clock()
            result.first_step_s = first_step_end - started
        samples = spec.batch_size * spec.grad_accum
        heartbeat.update(step=done, loss=loss, samples_per_s=samples / dt, tokens_per_s=samples * spec.seq_len / dt)
        io.on_step(done, loss)
        result.final_step, result.final_loss = done, loss
        if checkpoint_due(done, last_ckpt_step, io.clock() - last_ckpt_time, spec) and done < spec.max_steps:
            checkpoint(done)
            last_ckpt_step, last_ckpt_time = done, io.clock()
    if result.final_step > start_step + 1:
        result.steps_per_s = (result.final_step - start_step - 1) / (io.clock() - first_step_end)
    uploader.wait()
    _write_final(io.store, model, tokenizer, scratch / "final", result)
    heartbeat.update(publish=True, state=TrainerState.done)
    log.info("done: step %d, loss %.4f", result.final_step, result.final_loss or float("nan"))
    return result


def _train_step(model, optimizer, scheduler, sampler, step, spec, device) -> float:
    import torch

    total = 0.0
    for micro in range(spec.grad_accum):
        batch = sampler.batch(step * spec.grad_accum + micro).to(device)
        loss = model(input_ids=batch, labels=batch).loss / spec.grad_accum
        loss.backward()
        total += loss.item()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return total


def _stop(spec, io, stop, heartbeat, uploader, checkpoint, step, last_ckpt_step, result) -> RunResult:
    noticed = io.clock()
    log.warning("stopping at step %d (%s): checkpointing", step, stop.reason)
    heartbeat.update(publish=True, state=TrainerState.checkpointing, stop_reason=stop.reason)
    if step != last_ckpt_step:
        checkpoint(step, urgent=True)
    uploader.wait()
    changes = {"state": TrainerState.checkpointed, "last_checkpoint_step": step}
    if stop.request_id:
        changes["honoured_request_id"] = stop.request_id
    heartbeat.update(publish=True, **changes)
    result.exit_code, result.stop_reason = EXIT_CHECKPOINTED, stop.reason
    result.durable_s = io.clock() - noticed
    return result


def _write_final(store: ObjectStore, model, tokenizer, local: Path, result: RunResult) -> None:
    """final/: the trained model and tokenizer in save_pretrained layout."""
    model.save_pretrained(local, safe_serialization=True)
    tokenizer.save_pretrained(local)
    files = [p for p in local.rglob("*") if p.is_file()]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda p: store.upload_file(p, FINAL + p.relative_to(local).as_posix()), files))
