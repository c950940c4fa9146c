"""Exact resume: kill -9 and SIGTERM a real trainer process at random steps, start it again, and
end with the same weights and final loss as an uninterrupted run (moto S3 on 127.0.0.1)."""

from __future__ import annotations

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
from training.contract import read_latest, read_progress, write_spec
from training.exitcodes import EXIT_CHECKPOINTED, EXIT_DONE
from training.spec import TrainingSpec
from training.storage import split_s3_uri

MAX_STEPS = 60
EVERY = 10


def make_spec(tiny_lm, bucket: str, job_id: str) -> TrainingSpec:
    model_dir, dataset = tiny_lm
    return TrainingSpec(
        job_id=job_id, model=str(model_dir), dataset=str(dataset), output=f"s3://{bucket}/jobs/{job_id}/",
        max_steps=MAX_STEPS, batch_size=4, seq_len=32, seed=7, learning_rate=3e-3, warmup_steps=5,
        checkpoint_every_steps=EVERY, keep_checkpoints=2, heartbeat_seconds=0.05, control_poll_seconds=0.2,
        min_step_seconds=0.05,
    )


def start_trainer(spec_uri: str, endpoint: str) -> subprocess.Popen:
    env = {**os.environ, **local_env(endpoint), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "training", "--spec", spec_uri], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_step(s3, output: str, proc: subprocess.Popen, step: int, resumed_from: int | None = None,
                  timeout_s: float = 90) -> int:
    """Block until this process's progress.json (resumed_from tells it from an earlier process's)
    shows >= step and a checkpoint exists; returns the step seen."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        progress = read_progress(s3, output)
        if (progress is not None and progress.step >= step and progress.resumed_from_step == resumed_from
                and read_latest(s3, output) is not None):
            return progress.step
        assert proc.poll() is None, f"trainer exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}"
        time.sleep(0.01)
    raise AssertionError(f"trainer did not reach step {step} in {timeout_s}s")


def final_weights(s3, output: str) -> dict[str, torch.Tensor]:
    bucket, prefix = split_s3_uri(output)
    body = s3.get_object(Bucket=bucket, Key=prefix + "final/model.safetensors")["Body"].read()
    return load(body)


@pytest.fixture(scope="module")
def uninterrupted(tiny_lm, moto_endpoint):
    """The reference: the same spec trained start to finish, in this process, on one thread
    (the trainer subprocesses get OMP_NUM_THREADS=1 too)."""
    from deployments.local_aws import client
    from training.loop import TrainerIO, run_training
    from training.stopping import StopFlag
    from training.storage import open_store

    s3 = client("s3", moto_endpoint)
    s3.create_bucket(Bucket="resume-reference")
    spec = make_spec(tiny_lm, "resume-reference", "reference").model_copy(update={"min_step_seconds": 0.0})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_training(spec, TrainerIO(store=open_store(spec.output, s3), s3=s3), StopFlag())
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == EXIT_DONE, result.error
    return read_progress(s3, spec.output), final_weights(s3, spec.output)


@pytest.mark.slow
def test_kill9_then_sigterm_at_random_steps_resume_to_identical_weights_and_loss(
    tiny_lm, uninterrupted, s3, bucket, moto_endpoint
):
    """One job, three processes: kill -9 at a random step after the first checkpoint, resume;
    SIGTERM at a later random step (checkpoint durable in S3 within 120 s, exit 75), resume; finish."""
    reference_progress, reference_weights = uninterrupted
    spec = make_spec(tiny_lm, bucket, "resume")
    spec_uri = write_spec(s3, spec)
    kill_at = random.randint(EVERY + 1, MAX_STEPS // 2)

    first = start_trainer(spec_uri, moto_endpoint)
    wait_for_step(s3, spec.output, first, kill_at)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    killed_after = read_latest(s3, spec.output).step
    assert EVERY <= killed_after < MAX_STEPS

    second = start_trainer(spec_uri, moto_endpoint)
    term_at = random.randint(killed_after + 2, MAX_STEPS - 8)
    seen = wait_for_step(s3, spec.output, second, term_at, resumed_from=killed_after)
    sent = time.monotonic()
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=120) == EXIT_CHECKPOINTED, second.stderr.read()[-2000:]
    notice_to_durable = time.monotonic() - sent
    stopped = read_progress(s3, spec.output)
    assert stopped.state == "checkpointed" and stopped.stop_reason == "sigterm"
    assert read_latest(s3, spec.output).step == stopped.step >= seen
    assert notice_to_durable < 120

    third = start_trainer(spec_uri, moto_endpoint)
    assert third.wait(timeout=120) == EXIT_DONE, third.stderr.read()[-2000:]
    done = read_progress(s3, spec.output)
    assert done.state == "done" and done.step == MAX_STEPS
    assert done.resumed_from_step == stopped.step
    assert done.loss == pytest.approx(reference_progress.loss, rel=0, abs=1e-6)
    weights = final_weights(s3, spec.output)
    assert weights.keys() == reference_weights.keys()
    for name, tensor in reference_weights.items():
        assert torch.allclose(weights[name], tensor, rtol=0, atol=1e-6), name
