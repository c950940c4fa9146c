"""Exact resume: kill -9 and SIGTERM a real trainer (one process, or a 2-process torchrun on gloo,
DDP or FSDP) at random steps, start it again, and end with the same weights and final loss as an
uninterrupted run, for fp32 and bf16 (CPU autocast) full fine-tunes and LoRA; and a 2-process
checkpoint resumed by one process at the right sample (moto S3 on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load

from deployments.local_aws import local_env
from training.bootstrap import SHUTDOWN_GRACE_S
from training.contract import read_latest, read_metrics, read_progress, write_spec
from training.exitcodes import EXIT_CHECKPOINTED, EXIT_DONE
from training.spec import TrainingSpec
from training.storage import split_s3_uri

MAX_STEPS = 40
EVERY = 8
# mode -> (spec fields, processes)
MODES = {
    "fp32-full": ({}, 1),
    "bf16-full": ({"precision": "bf16"}, 1),
    "lora": ({"method": "lora", "lora": {"r": 4, "target_modules": ["c_attn", "c_proj"]}, "learning_rate": 1e-2}, 1),
    "ddp2-full": ({"device": "cpu", "min_step_seconds": 0.2}, 2),  # paced: two ranks and moto share 2 cores
    "fsdp2-full": ({"device": "cpu", "sharding": "fsdp", "min_step_seconds": 0.2}, 2),
}


def make_spec(tiny_lm, bucket: str, job_id: str, **fields) -> TrainingSpec:
    model_dir, dataset = tiny_lm
    base = dict(
        job_id=job_id, model=str(model_dir), dataset=str(dataset), output=f"s3://{bucket}/jobs/{job_id}/",
        max_steps=MAX_STEPS, batch_size=4, seq_len=32, seed=7, learning_rate=3e-3, warmup_steps=5,
        checkpoint_every_steps=EVERY, keep_checkpoints=2, heartbeat_seconds=0.05, control_poll_seconds=0.2,
        min_step_seconds=0.1, metrics_every_steps=5,
    )
    return TrainingSpec(**(base | fields))


def start_trainer(spec_uri: str, endpoint: str, processes: int = 1) -> subprocess.Popen:
    """`python -m training` for one process, `torchrun --standalone --nproc_per_node=N -m training`
    otherwise."""
    env = {**os.environ, **local_env(endpoint), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": str(SHUTDOWN_GRACE_S)}  # as the user-data sets it
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] \
        if processes > 1 else [sys.executable]
    return subprocess.Popen([*launcher, "-m", "training", "--spec", spec_uri], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (Linux /proc); torchrun starts its workers in sessions of their own."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in glob.glob(f"/proc/{current}/task/*/children"):
            with contextlib.suppress(OSError):
                queue.extend(int(child) for child in open(task).read().split())
    return found


def signal_machine(proc: subprocess.Popen, signum: int) -> None:
    """What a preemption does to every process of the machine: kill -9, or the shutdown's SIGTERM."""
    for pid in process_tree(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def wait_for_step(s3, output: str, proc: subprocess.Popen, step: int, resumed_from: int | None = None,
                  timeout_s: float = 120) -> int:
    """Block until this process's progress.json (resumed_from tells it from an earlier process's)
    shows >= step and a checkpoint exists; returns the step seen."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        progress = read_progress(s3, output)
        if (progress is not None and progress.step >= step and progress.resumed_from_step == resumed_from
                and read_latest(s3, output) is not None):
            return progress.step
        assert proc.poll() is None, f"trainer exited early ({proc.returncode}): {proc.stderr.read()[-3000:]}"
        time.sleep(0.01)
    raise AssertionError(f"trainer did not reach step {step} in {timeout_s}s")


def final_weights(s3, output: str) -> dict[str, torch.Tensor]:
    bucket, prefix = split_s3_uri(output)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "final/")["Contents"]]
    name = next(k for k in keys if k.endswith(("/model.safetensors", "/adapter_model.safetensors")))
    return load(s3.get_object(Bucket=bucket, Key=name)["Body"].read())


def reference_run(tiny_lm, s3, endpoint: str, mode: str):
    """The same spec trained start to finish without interruption, unpaced: in this process on one
    thread for one process (the trainer subprocesses get OMP_NUM_THREADS=1 too), by torchrun otherwise."""
    from training.loop import TrainerIO, run_training
    from training.stopping import StopFlag
    from training.storage import open_store

    fields, processes = MODES[mode]
    bucket = f"reference-{mode}"
    s3.create_bucket(Bucket=bucket)
    spec = make_spec(tiny_lm, bucket, "reference", **fields).model_copy(update={"min_step_seconds": 0.0})
    if processes > 1:
        proc = start_trainer(write_spec(s3, spec), endpoint, processes)
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
    else:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            result = run_training(spec, TrainerIO(store=open_store(spec.output, s3), s3=s3), StopFlag())
        finally:
            torch.set_num_threads(threads)
        assert result.exit_code == EXIT_DONE, result.error
    return read_progress(s3, spec.output), final_weights(s3, spec.output), read_metrics(s3, spec.output)


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
def test_kill9_then_sigterm_at_random_steps_resume_to_identical_weights_and_loss(
    mode, tiny_lm, s3, bucket, moto_endpoint
):
    """One job, three starts: kill -9 at a random step after the first checkpoint, resume;
    SIGTERM at a later random step (checkpoint durable in S3, exit 75), resume; finish."""
    fields, processes = MODES[mode]
    reference_progress, reference_weights, reference_metrics = reference_run(tiny_lm, s3, moto_endpoint, mode)
    spec = make_spec(tiny_lm, bucket, "resume", **fields)
    spec_uri = write_spec(s3, spec)
    kill_at = random.randint(EVERY + 1, MAX_STEPS // 2)

    first = start_trainer(spec_uri, moto_endpoint, processes)
    wait_for_step(s3, spec.output, first, kill_at)
    signal_machine(first, signal.SIGKILL)
    first.wait(timeout=30)
    killed_after = read_latest(s3, spec.output).step
    assert EVERY <= killed_after <= MAX_STEPS - 2 * EVERY, "the kill came too late to test a second stop"

    second = start_trainer(spec_uri, moto_endpoint, processes)
    term_at = random.randint(killed_after + 2, MAX_STEPS - 6)
    seen = wait_for_step(s3, spec.output, second, term_at, resumed_from=killed_after)
    signal_machine(second, signal.SIGTERM)
    code = second.wait(timeout=120)
    # torchrun reports any non-zero worker exit (75 included) as 1: progress.json tells the outcome
    assert code == (EXIT_CHECKPOINTED if processes == 1 else 1), second.stderr.read()[-3000:]
    stopped = read_progress(s3, spec.output)
    assert stopped.state == "checkpointed" and stopped.stop_reason == "sigterm", \
        f"{stopped.state} {stopped.stop_reason}: {second.stderr.read()[-6000:]}"
    assert read_latest(s3, spec.output).step == stopped.step >= seen

    third = start_trainer(spec_uri, moto_endpoint, processes)
    assert third.wait(timeout=180) == EXIT_DONE, third.stderr.read()[-3000:]
    done = read_progress(s3, spec.output)
    assert done.state == "done" and done.step == MAX_STEPS
    assert done.resumed_from_step == stopped.step
    assert done.loss == pytest.approx(reference_progress.loss, rel=0, abs=1e-6)
    weights = final_weights(s3, spec.output)
    assert weights.keys() == reference_weights.keys()
    for name, tensor in reference_weights.items():
        assert torch.allclose(weights[name], tensor, rtol=0, atol=1e-6), name
    # the loss curve: one record per metrics_every_steps, none twice, the same values
    metrics = read_metrics(s3, spec.output)
    assert [m.step for m in metrics] == [m.step for m in reference_metrics] == list(range(5, MAX_STEPS + 1, 5))
    for got, want in zip(metrics, reference_metrics):
        assert got.loss == pytest.approx(want.loss, rel=0, abs=1e-6), got.step


@pytest.mark.slow
def test_two_process_checkpoint_resumes_in_one_process_at_the_right_sample(
    tiny_lm, s3, bucket, moto_endpoint, tmp_path
):
    """A global batch of 4 samples a step, 2 on each of 2 ranks, stops at step k (SIGTERM): 4k
    samples seen. One process resumes at sample 4k (not 8k, where 4 samples per rank would have
    put it): its first step's loss is the loss of samples [4k, 4k+4) under the checkpoint's
    weights and rank 0's RNG."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.checkpoint import fetch_latest_complete, restore_rng, rng_of_rank
    from training.data import SampleStream, build_samples
    from training.model_source import load_records
    from training.storage import S3Store

    spec = make_spec(tiny_lm, bucket, "reshard", device="cpu", metrics_every_steps=1, min_step_seconds=0.2)
    spec_uri = write_spec(s3, spec)
    two = start_trainer(spec_uri, moto_endpoint, processes=2)
    wait_for_step(s3, spec.output, two, EVERY + 3)
    signal_machine(two, signal.SIGTERM)
    two.wait(timeout=120)
    stopped = read_progress(s3, spec.output)
    assert stopped.state == "checkpointed", two.stderr.read()[-3000:]
    k = stopped.step
    store = S3Store.from_uri(s3, spec.output)
    state = json.loads(store.get_bytes(f"checkpoints/step-{k}/trainer_state.json"))
    assert state["world_size"] == 2 and state["samples_seen"] == 4 * k and state["global_batch"] == 4

    restored = fetch_latest_complete(store, tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(restored.directory)
    samples = build_samples(load_records(spec.dataset, "train", "text"), tokenizer, spec.seq_len)
    stream = SampleStream(samples, spec.seed)
    model = AutoModelForCausalLM.from_pretrained(restored.directory, dtype=torch.float32)
    model.train()
    saved_rng = torch.load(io.BytesIO(restored.files["rng.pt"]), weights_only=False)

    def first_step_loss(sample: int) -> float:
        restore_rng(rng_of_rank(saved_rng, 0))
        input_ids, labels = stream.batch(sample, spec.batch_size)
        with torch.no_grad():
            return model(input_ids=input_ids, labels=labels).loss.item()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        right, wrong = first_step_loss(4 * k), first_step_loss(2 * 4 * k)
    finally:
        torch.set_num_threads(threads)

    one = start_trainer(spec_uri, moto_endpoint, processes=1)
    assert one.wait(timeout=180) == EXIT_DONE, one.stderr.read()[-3000:]
    done = read_progress(s3, spec.output)
    assert done.resumed_from_step == k and done.step == MAX_STEPS
    first_resumed = next(m for m in read_metrics(s3, spec.output) if m.step == k + 1)
    assert first_resumed.loss == pytest.approx(right, rel=0, abs=1e-6)
    assert abs(first_resumed.loss - wrong) > 1e-4
    assert first_resumed.samples_seen == 4 * k + 4

