"""The training loop: causal-LM fine-tuning (full, LoRA, QLoRA; fp32, bf16, fp16) on one process or
as one rank of a data-parallel group (a fixed global batch of batch_size x grad_accum samples per
step, dealt over the ranks: training.data.StepDeal), with exact resume from S3 checkpoints,
background uploads, and checkpoint-and-exit, agreed by every rank at the same step, when a
StopFlag is set.

Own loop rather than transformers' Trainer: every piece of state that decides the next step
(weights, AdamW moments, LR schedule, loss scale, RNG of every rank, data position = samples seen)
is explicit here, so a resumed run is bit-identical to an uninterrupted one, and checkpoint uploads
run on a background thread instead of blocking in save_state.
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

from training import distributed
from training.adapters import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, adapter_config_bytes, is_adapter, load_model
from training.checkpoint import (
    RNG_FILE, SCALER_FILE, BackgroundUploader, CheckpointCorrupt, SnapshotTaker, capture_rng, model_static_files,
    optimizer_from_files, optimizer_state_by_name, restore_rng, rng_file, rng_of_rank, scaler_file,
    small_state_from_files, start_restore,
)
from training.contract import FINAL, FINAL_MERGED, PROGRESS, MetricsRecord, Progress, TrainerState, load_json
from training.data import IGNORE, SampleStream, StepDeal, build_samples
from training.distributed import World
from training.exitcodes import EXIT_CHECKPOINTED, EXIT_DONE, EXIT_FAILED, EXIT_PERMANENT, PermanentFailure
from training.heartbeat import Heartbeat
from training.metrics import MetricsLog
from training.model_source import load_records, resolve_model_dir
from training.precision import autocast, make_scaler, resolve_precision
from training.spec import TrainingSpec
from training.stopping import StopFlag, watch_control, watch_spot_notice
from training.storage import ObjectStore
from training.versions import check_resume

log = logging.getLogger("training")

EVAL_MAX_SAMPLES = 256  # eval loss over at most this many samples of the eval split (the first ones)


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
    samples_seen: int = 0
    precision: str | None = None
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


def eval_due(step: int, spec: TrainingSpec) -> bool:
    every = spec.eval_every_steps or spec.metrics_every_steps
    return spec.eval_split is not None and (step % every == 0 or step == spec.max_steps)


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


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of a rank's RNG (dropout): the job's seed on rank 0 at step 0, distinct elsewhere."""
    return (seed + 1_000_003 * rank + 7_919 * step) % 2**63


def run_training(spec: TrainingSpec, io: TrainerIO, stop: StopFlag, world: World | None = None) -> RunResult:
    """Train `spec` to max_steps, or until `stop` is set on any rank (then checkpoint and return 75).
    `world`: this process's rank among torchrun's processes (one process by default)."""
    world = world or World()
    started = io.clock()
    previous = load_json(io.store, PROGRESS, Progress) if world.main else None
    heartbeat = Heartbeat(io.store, Progress(
        state=TrainerState.starting, step=0, max_steps=spec.max_steps, instance_id=spec.instance_id,
        job_id=spec.job_id, updated_at=io.now(), started_at=io.now(),
        honoured_request_id=previous.honoured_request_id if previous else None,
    ), io.now, enabled=world.main)
    heartbeat.start(spec.heartbeat_seconds)
    heartbeat.update(soon=True)  # "starting", written by the heartbeat thread
    pollers = []
    with tempfile.TemporaryDirectory(prefix="spotshift-train-", dir=io.scratch) as scratch_dir:
        snapshots = SnapshotTaker()
        uploader = BackgroundUploader(
            io.store, spec.keep_checkpoints, io.now,
            on_published=lambda m: heartbeat.update(last_checkpoint_step=m.step),
            on_released=snapshots.release, clock=io.clock,
        )
        run = _Run(spec, io, stop, world, heartbeat, uploader, snapshots, Path(scratch_dir), started, pollers)
        try:
            if spec.imds_endpoint and world.main:
                pollers.append(watch_spot_notice(spec.imds_endpoint, stop, spec.control_poll_seconds))
            return run.train()
        except Exception as exc:
            message = f"{exc.__class__.__name__}: {exc}".splitlines()[0][:500]
            permanent = isinstance(exc, PermanentFailure)  # no restart can fix it: the job ends here
            if permanent:
                log.error("training refused: %s", exc)
            else:
                log.exception("training failed")
            heartbeat.update(publish=True, state=TrainerState.failed, error=message, permanent=permanent)
            return RunResult(EXIT_PERMANENT if permanent else EXIT_FAILED, final_step=heartbeat.progress.step,
                             error=message)
        finally:
            for poller in pollers:
                poller.stop()
            heartbeat.stop()
            uploader.close()
            if run.metrics is not None:
                run.metrics.close()
            if run.restoring is not None:
                run.restoring.close()
            distributed.stop(world)


@dataclass
class _Model:
    """What training steps: the (possibly DDP-wrapped) model and its optimizer state."""

    model: object  # what the forward pass calls (DDP on several ranks)
    inner: object  # the model itself (the PEFT model for lora)
    tokenizer: object
    optimizer: object
    scheduler: object
    scaler: object | None
    precision: str
    device: str
    sharding: str = "ddp"  # several processes: ddp | fsdp


@dataclass
class _Start:
    step: int = 0
    samples_seen: int = 0  # stream index of the next step's first sample
    honoured: str | None = None
    resumed: bool = False
    loss_window: list[float] = field(default_factory=list)  # losses of the steps since the last metrics record


class _Run:
    """One training run of this rank; train() is the whole of it."""

    def __init__(self, spec, io, stop, world, heartbeat, uploader, snapshots, scratch, started, pollers):
        self.spec, self.io, self.stop, self.world = spec, io, stop, world
        self.heartbeat, self.uploader, self.snapshots = heartbeat, uploader, snapshots
        self.scratch, self.started, self.pollers = scratch, started, pollers
        self.metrics: MetricsLog | None = None
        self.result = RunResult(EXIT_DONE, publish_s=uploader.publish_seconds)
        self.restoring = None  # a checkpoint still arriving (its optimizer state)
        self.reserved = self.control_watched = False

    # -- start-up ---------------------------------------------------------------------------

    def _load(self, skip: set[int]) -> tuple[_Model, SampleStream, SampleStream | None, _Start]:
        """Data, model, optimizer and the position to start from: the newest checkpoint not in
        `skip`, or the job's model. Overlapped: the dataset is read and tokenized (the tokenizers
        library releases the GIL) while the checkpoint downloads and the model loads, and the
        optimizer's tensors download until the first optimizer update needs them."""
        # transformers' lazy names resolved here, on one thread: the dataset thread's first use of
        # them (datasets' fingerprinting checks transformers.PreTrainedTokenizerBase) must not race
        from transformers import AutoTokenizer, PreTrainedTokenizerBase  # noqa: F401

        spec = self.spec
        self.deal = StepDeal(spec.batch_size, spec.grad_accum, self.world.size)  # refuses more ranks than samples
        device = distributed.rank_device(self.world, pick_device(spec.device))
        distributed.start(self.world, device)
        precision = resolve_precision(spec.precision, device)
        make_deterministic(device)
        background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataset")
        def read(split: str):
            return background.submit(load_records, spec.dataset, split, spec.dataset_text_column, self.io.s3)

        records, eval_records = read(spec.dataset_split), read(spec.eval_split) if spec.eval_split else None
        self.restoring = restoring = start_restore(self.io.store, self.scratch, skip, vet=check_resume)
        full_resume = restoring is not None and spec.method == "full"
        model_dir = (str(restoring.model_directory()) if full_resume
                     else resolve_model_dir(spec.model, self.scratch, self.io.s3))
        tokenizer = background.submit(AutoTokenizer.from_pretrained, model_dir)
        def tokenize(raw):
            return background.submit(lambda: build_samples(raw.result(), tokenizer.result(), spec.seq_len))

        samples, eval_samples = tokenize(records), tokenize(eval_records) if eval_records else None
        background.shutdown(wait=False)
        self.built = built = self._build_model(model_dir, device, precision, restoring, tokenizer)
        start = self._restore(built, restoring)
        if restoring is not None and (built.sharding == "fsdp" or optimizer_state_by_name(restoring.early_files())):
            self._load_pending_optimizer()  # torch's sharding helper wants it before any gradient exists
        train_stream = SampleStream(samples.result(), spec.seed)
        eval_stream = SampleStream(eval_samples.result(), spec.seed) if eval_samples else None
        return built, train_stream, eval_stream, start

    def _build_model(self, model_dir: str, device: str, precision: str, restoring, tokenizer) -> _Model:
        import torch

        spec = self.spec
        seed_everything(spec.seed)  # the same adapter initialisation on every rank
        inner = load_model(spec, model_dir, device, precision)
        if restoring is not None and is_adapter(inner):
            from training.adapters import load_adapter_weights
            from training.tensor_pack import views

            adapter = views(restoring.early_files()[ADAPTER_WEIGHTS_FILE])[0]
            load_adapter_weights(inner, {name: tensor.clone() for name, tensor in adapter.items()})
        parameters = sum(p.numel() for p in inner.parameters())
        sharding = distributed.choose_sharding(spec.sharding, spec.method, self.world, parameters,
                                               distributed.device_bytes(device))
        if self.world.main:  # before sharding: the config and tokenizer files, as save_pretrained writes them
            self.snapshots.set_static_files({ADAPTER_CONFIG_FILE: adapter_config_bytes(inner)} if is_adapter(inner)
                                            else model_static_files(inner, tokenizer.result()))
        model = distributed.wrap(inner, self.world, device, sharding)
        trainable = [p for p in inner.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=spec.learning_rate, weight_decay=spec.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, spec.warmup_steps, spec.max_steps))
        if self.world.distributed:
            log.info("%d processes, %s", self.world.size, sharding)
        return _Model(model, inner, tokenizer.result(), optimizer, scheduler, make_scaler(precision, device), precision,
                      device, sharding)

    def _restore(self, built: _Model, restoring) -> _Start:
        """Schedule, scaler, data position and this rank's RNG from the checkpoint (or the seeds of
        a fresh run); the optimizer's state waits for the first update (see _load_pending_optimizer)."""
        spec, world = self.spec, self.world
        start = _Start(honoured=self.heartbeat.progress.honoured_request_id)
        if restoring is None:
            seed_everything(rank_seed(spec.seed, world.rank))
            return start
        state = small_state_from_files(restoring.early_files(), built.scheduler, built.scaler)
        start.step, start.resumed = state["step"], True
        start.samples_seen = state.get("samples_seen", state["data_position"] * state["micro_batch_size"])
        start.honoured = state.get("honoured_request_id") or start.honoured
        start.loss_window = list(state.get("loss_window", []))
        saved_world = state.get("world_size", 1)
        rng = rng_of_rank(state["rng"], world.rank)
        if rng is not None:
            restore_rng(rng)
        else:
            seed_everything(rank_seed(spec.seed, world.rank, start.step))
        if saved_world != world.size:
            log.warning("checkpoint step-%d was written by %d processes, resuming on %d: training continues at "
                        "sample %d; ranks without a saved RNG state are seeded", start.step, saved_world,
                        world.size, start.samples_seen)
        _warn_if_global_batch_changed(state, start.samples_seen, self.deal.global_batch)
        log.info("resumed from checkpoint step-%d (sample %d)", start.step, start.samples_seen)
        return start

    def _load_pending_optimizer(self) -> None:
        """The optimizer's state from the checkpoint, right before the first update after a resume
        (its tensors have been downloading meanwhile); raises CheckpointCorrupt."""
        if self.restoring is not None:
            optimizer_from_files(self.restoring.files(), self.built.optimizer,
                                 lambda full: _load_optimizer(self.built, full))
            self.restoring.close()
            self.restoring = None

    # -- the loop -----------------------------------------------------------------------------

    def train(self) -> RunResult:
        """Load and train; a checkpoint found corrupt while it arrives is skipped for the one before."""
        skip: set[int] = set()
        while True:
            try:
                return self._train(*self._load(skip))
            except CheckpointCorrupt as exc:
                if exc.step is None or exc.step in skip:
                    raise
                log.warning("checkpoint step-%d is unusable (%s); trying the previous one", exc.step, exc)
                skip.add(exc.step)
                if self.restoring is not None:
                    self.restoring.close()
                    self.restoring = None
                if self.metrics is not None:
                    self.metrics.close()
                self.result = RunResult(EXIT_DONE, publish_s=self.uploader.publish_seconds)

    def _train(self, built: _Model, stream: SampleStream, eval_stream: SampleStream | None, start: _Start) -> RunResult:
        spec, io, world, result = self.spec, self.io, self.world, self.result
        self.built, self.start_state = built, start
        result.start_step = result.final_step = start.step
        result.samples_seen, result.precision = start.samples_seen, built.precision
        self.metrics = MetricsLog(io.store if world.main else None, start.step if start.resumed else None)
        self.metrics.start(spec.heartbeat_seconds)
        if world.main and not self.control_watched:
            self.pollers.append(watch_control(io.store, self.stop, start.honoured, spec.control_poll_seconds))
            self.control_watched = True
        self.heartbeat.update(soon=True, state=TrainerState.training, step=start.step,
                              resumed_from_step=start.step if start.resumed else None,
                              last_checkpoint_step=start.step if start.resumed else None)
        last_ckpt_step = start.step if start.resumed else -1  # -1: no checkpoint yet
        last_ckpt_time = io.clock()
        first_step_end, self.window = None, list(start.loss_window)
        samples_per_step = self.deal.global_batch  # the same on any number of ranks
        built.model.train()
        stop_now = distributed.sum_across(world, [float(self.stop.is_set())], built.device)[0] > 0
        for step in range(start.step, spec.max_steps):
            if stop_now:
                return self._stop(step, last_ckpt_step)
            t0 = io.clock()
            loss = self._train_step(built, stream, result.samples_seen, before_update=self._load_pending_optimizer)
            if spec.min_step_seconds:
                time.sleep(max(0.0, spec.min_step_seconds - (io.clock() - t0)))
            done = step + 1
            io.on_step(done, loss)  # this rank's part of the step's loss (the loss itself on one process)
            timed_due = spec.checkpoint_every_seconds is not None and \
                io.clock() - last_ckpt_time >= spec.checkpoint_every_seconds
            loss_sum, stops, timed = distributed.sum_across(
                world, [loss, float(self.stop.is_set()), float(timed_due)], built.device)
            loss, stop_now = loss_sum, stops > 0  # the ranks' parts add up to the global batch's loss
            dt = io.clock() - t0
            result.samples_seen += samples_per_step
            if first_step_end is None:
                first_step_end = io.clock()
                result.first_step_s = first_step_end - self.started
                self._reserve_snapshot_buffers()
            self.heartbeat.update(step=done, loss=loss, samples_per_s=samples_per_step / dt,
                                  tokens_per_s=samples_per_step * spec.seq_len / dt)
            result.final_step, result.final_loss = done, loss
            self.window.append(loss)
            if done % spec.metrics_every_steps == 0 or done == spec.max_steps or eval_due(done, spec):
                self._record_metrics(done, self.window, eval_stream)
                self.window = []
            due = checkpoint_due(done, last_ckpt_step, 0.0, spec) or timed > 0
            if due and done < spec.max_steps and done != last_ckpt_step:
                self._checkpoint(done)
                last_ckpt_step, last_ckpt_time = done, io.clock()
        if result.final_step > start.step + 1:
            result.steps_per_s = (result.final_step - start.step - 1) / (io.clock() - first_step_end)
        return self._finish()

    def _reserve_snapshot_buffers(self) -> None:
        """The first snapshot's buffers, allocated and touched on a background thread once training
        runs (not while the resume races to its first step)."""
        if self.world.main and self.built.sharding != "fsdp" and not self.reserved:
            self.snapshots.reserve(self.built.inner, background=True)
            self.reserved = True

    def _train_step(self, built: _Model, stream: SampleStream, samples_before: int,
                    before_update: Callable[[], None] = lambda: None) -> float:
        """One optimizer step over the global batch that starts at stream index `samples_before`;
        returns this rank's part of its loss. `before_update` runs between the backward passes and
        the update."""
        import torch

        total = self._backward_global_batch(built, stream, samples_before)
        before_update()
        if built.scaler is not None:
            built.scaler.unscale_(built.optimizer)
        torch.nn.utils.clip_grad_norm_([p for p in built.inner.parameters() if p.requires_grad], 1.0)
        if built.scaler is not None:
            built.scaler.step(built.optimizer)
            built.scaler.update()
        else:
            built.optimizer.step()
        built.scheduler.step()
        built.optimizer.zero_grad(set_to_none=True)
        return total

    def _backward_global_batch(self, built: _Model, stream: SampleStream, samples_before: int) -> float:
        """Gradients of samples [samples_before, samples_before + G): this rank's micro-batches
        (self.deal), each loss weighted by its share of the step's loss tokens and by the world
        size, so the gradient DDP/FSDP average over the ranks is the gradient of the token-weighted
        mean loss over the whole global batch, on any number of ranks. Returns this rank's part of
        that loss (the parts of all ranks add up to it)."""
        deal, world = self.deal, self.world
        order = stream.indices(samples_before, deal.global_batch)
        step_tokens = max(1, int(stream.loss_tokens_per_sample[order].sum()))
        batches = deal.micro_batches(world.rank)
        total = 0.0
        for micro, positions in enumerate(batches):
            chosen = [order[p] for p in positions] or order[:1]  # empty: a padding pass on a real sample, weight 0
            tokens = int(stream.loss_tokens_per_sample[chosen].sum()) if positions else 0
            input_ids, labels = stream.rows(chosen)
            with distributed.gradient_sync(built.model, not world.distributed or micro == len(batches) - 1):
                with autocast(built.precision, built.device):
                    loss = built.model(input_ids=input_ids.to(built.device), labels=labels.to(built.device)).loss
                part = loss.float() * (tokens / step_tokens)
                averaged = part * world.size  # DDP and FSDP divide the summed gradients by the world size
                (built.scaler.scale(averaged) if built.scaler is not None else averaged).backward()
            total += part.item()
        return total

    def _evaluate(self, stream: SampleStream) -> float:
        """Token-weighted mean loss over the first EVAL_MAX_SAMPLES eval samples, shared out over the ranks."""
        import torch

        built, world, spec = self.built, self.world, self.spec
        count = min(len(stream.samples), EVAL_MAX_SAMPLES)
        mine = list(range(world.rank, count, world.size))
        batches = -(-count // (world.size * spec.batch_size))  # the same number on every rank (FSDP gathers)
        loss_sum, tokens = 0.0, 0.0
        built.inner.eval()
        with torch.no_grad():
            for first in range(0, batches * spec.batch_size, spec.batch_size):
                chosen = mine[first:first + spec.batch_size]
                input_ids, labels = stream.samples.input_ids[chosen or [0]], stream.samples.labels[chosen or [0]]
                n = float((labels[:, 1:] != IGNORE).sum()) if chosen else 0.0
                with autocast(built.precision, built.device):
                    loss = built.inner(input_ids=input_ids.to(built.device), labels=labels.to(built.device)).loss
                loss_sum, tokens = loss_sum + float(loss) * n, tokens + n
        built.model.train()
        loss_sum, tokens = distributed.sum_across(world, [loss_sum, tokens], built.device)
        return loss_sum / max(tokens, 1.0)

    def _record_metrics(self, step: int, window: list[float], eval_stream: SampleStream | None) -> None:
        eval_loss = self._evaluate(eval_stream) if eval_stream is not None and eval_due(step, self.spec) else None
        self.metrics.add(MetricsRecord(
            step=step, loss=sum(window) / len(window) if window else None, eval_loss=eval_loss,
            learning_rate=self.built.scheduler.get_last_lr()[0], samples_seen=self.result.samples_seen,
            at=self.io.now()))

    # -- checkpoints, stop, final ---------------------------------------------------------------

    def _checkpoint(self, step: int, urgent: bool = False) -> None:
        """Every rank hands its RNG state to rank 0, which snapshots and uploads in the background."""
        built, spec = self.built, self.spec
        rngs = distributed.gather_objects(self.world, capture_rng())
        full = distributed.full_state(built.model, built.optimizer) if built.sharding == "fsdp" else None
        if not self.world.main:
            return
        trainer_state = {
            "step": step, "samples_seen": self.result.samples_seen, "global_batch": self.deal.global_batch,
            # for readers of checkpoints older than samples_seen: samples_seen in micro-batches
            "data_position": self.result.samples_seen // spec.batch_size, "micro_batch_size": spec.batch_size,
            "world_size": self.world.size, "seed": spec.seed,
            "job_id": spec.job_id, "method": spec.method, "precision": built.precision,
            "loss": self.heartbeat.progress.loss, "loss_window": self.window,
            "honoured_request_id": self.stop.request_id or self.start_state.honoured,
        }
        small = {RNG_FILE: rng_file(rngs)}
        if built.scaler is not None:
            small[SCALER_FILE] = scaler_file(built.scaler)
        taken = self.io.clock()
        snapshot = self.snapshots.take(step, built.inner, built.optimizer, built.scheduler, trainer_state, urgent,
                                       small, full_state=full)
        self.result.snapshot_s.append(self.io.clock() - taken)
        self.uploader.submit(snapshot)

    def _stop(self, step: int, last_ckpt_step: int) -> RunResult:
        io, result = self.io, self.result
        noticed = io.clock()
        log.warning("stopping at step %d (%s): checkpointing", step, self.stop.reason or "another rank's stop")
        self.heartbeat.update(soon=True, state=TrainerState.checkpointing, stop_reason=self.stop.reason)
        if step != last_ckpt_step:
            self._checkpoint(step, urgent=True)
        if self.world.main:
            self.uploader.wait()
        result.durable_s = io.clock() - noticed  # LATEST.json names it: the checkpoint is durable
        if self.world.main:
            self.metrics.flush()
        changes = {"state": TrainerState.checkpointed, "last_checkpoint_step": step}
        if self.stop.request_id:
            changes["honoured_request_id"] = self.stop.request_id
        self.heartbeat.update(publish=True, **changes)
        distributed.barrier(self.world)  # no rank exits before the checkpoint is durable
        result.exit_code, result.stop_reason = EXIT_CHECKPOINTED, self.stop.reason
        return result

    def _finish(self) -> RunResult:
        built = self.built
        full = distributed.full_state(built.model)[0] if built.sharding == "fsdp" else None
        if self.world.main:
            self.uploader.wait()
            _write_final(self.io.store, built.inner, built.tokenizer, self.scratch / "final", self.spec.merge_adapter,
                         full)
            self.metrics.flush()
        self.heartbeat.update(publish=True, state=TrainerState.done)
        distributed.barrier(self.world)
        log.info("done: step %d, loss %.4f", self.result.final_step, self.result.final_loss or float("nan"))
        return self.result


def _warn_if_global_batch_changed(state: dict, samples_seen: int, global_batch: int) -> None:
    """A checkpoint trained on another global batch resumes at its sample, with this run's batch:
    say so. Checkpoints older than `global_batch` took batch_size x grad_accum samples per step on
    every rank (samples_seen / step of them)."""
    saved = state.get("global_batch")
    if saved is None and state.get("world_size", 1) > 1 and state["step"] > 0:
        saved = samples_seen // state["step"]
    if saved is not None and saved != global_batch:
        log.warning("checkpoint step-%d trained on %d samples per step; this run trains on %d (batch_size x "
                    "grad_accum, on any number of processes) from sample %d", state["step"], saved, global_batch,
                    samples_seen)


def _load_optimizer(built: _Model, state: dict) -> None:
    """A checkpoint's optimizer state: by parameter index as saved by one replica, or by parameter
    name as gathered from FSDP shards (then sharded again, or loaded whole, by torch's helper)."""
    if built.sharding == "fsdp" or any(isinstance(key, str) for key in state["state"]):
        distributed.load_full_optimizer_state(built.model, built.optimizer, state)
    else:
        built.optimizer.load_state_dict(state)


def _write_final(store: ObjectStore, model, tokenizer, local: Path, merge: bool,
                 full_state: dict | None = None) -> None:
    """final/: the trained model and tokenizer in save_pretrained layout; for LoRA the adapter in
    PEFT's layout, and with `merge` the merged model under final/merged/. `full_state`: the
    weights gathered from FSDP shards."""
    if full_state is not None:
        from training.adapters import weights_to_save

        model.save_pretrained(local, safe_serialization=True, state_dict=weights_to_save(model, full_state))
    else:
        model.save_pretrained(local, safe_serialization=True)
    tokenizer.save_pretrained(local)
    uploads = [(p, FINAL + p.relative_to(local).as_posix()) for p in local.rglob("*") if p.is_file()]
    if merge and is_adapter(model):
        merged_dir = local.parent / "merged"
        merged = model.merge_and_unload()
        merged.save_pretrained(merged_dir, safe_serialization=True)
        tokenizer.save_pretrained(merged_dir)
        uploads += [(p, FINAL_MERGED + p.relative_to(merged_dir).as_posix())
                    for p in merged_dir.rglob("*") if p.is_file()]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda item: store.upload_file(*item), uploads))
