"""training.bootstrap's stop path: a SIGTERM to the user-data script (what the shutdown hook sends
when the machine shuts down) reaches torchrun's workers, never torchrun, so the trainer's checkpoint
does not depend on torchrun's grace before SIGKILL: a fixed 30 s in the default image's torch 2.9
(TORCH_ELASTIC_SHUTDOWN_TIMEOUT is read from torch 2.12 on). The real torchrun (2 CPU processes,
gloo, the tiny model, moto S3) and the hook's own stop command, run as systemd would run it."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from training.bootstrap import SHUTDOWN_GRACE_S, render_user_data
from training.contract import read_latest, read_progress, write_spec
from training.spec import TrainingSpec
from training.storage import split_s3_uri
from tests.test_bootstrap_s3 import user_data_env


def two_rank_spec(s3, bucket: str, tiny_lm) -> tuple[str, str]:
    """(spec uri, output) of a job that trains until stopped and checkpoints only when stopped."""
    model_dir, dataset = tiny_lm
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    output = f"s3://{bucket}/jobs/{job_id}/"
    spec = TrainingSpec(job_id=job_id, model=str(model_dir), dataset=str(dataset), output=output, max_steps=100_000,
                        batch_size=4, seq_len=32, checkpoint_every_steps=100_000, heartbeat_seconds=0.1,
                        control_poll_seconds=0.2, device="cpu", min_step_seconds=0.2)  # paced: 2 ranks and moto on 2 cores
    return write_spec(s3, spec), output


def assert_complete_checkpoint(s3, output: str, step: int) -> None:
    """LATEST.json names `step`, and every file it lists is in S3 with its size and sha256."""
    latest = read_latest(s3, output)
    assert latest is not None and latest.step == step
    bucket, prefix = split_s3_uri(output)
    for file in latest.files:
        body = s3.get_object(Bucket=bucket, Key=prefix + file.key)["Body"].read()
        assert (len(body), hashlib.sha256(body).hexdigest()) == (file.size, file.sha256), file.key


@pytest.mark.slow
def test_a_sigterm_to_the_user_data_checkpoints_though_torchrun_would_kill_its_workers_at_once(
        moto_endpoint, s3, bucket, tiny_lm, tmp_path):
    """torchrun's grace is 0 here (TORCH_ELASTIC_SHUTDOWN_TIMEOUT=0, read by this machine's torch):
    had torchrun been signalled, it would have SIGKILLed both ranks at once, before any checkpoint."""
    spec_uri, output = two_rank_spec(s3, bucket, tiny_lm)
    log_file = tmp_path / "train.log"
    script = render_user_data(spec_uri, python=sys.executable, gpus=2, log_file=str(log_file),
                              extra_env={"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "0"})
    proc = subprocess.Popen(["bash", "-c", script], env=user_data_env(tmp_path, moto_endpoint), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while (progress := read_progress(s3, output)) is None or progress.step < 3:
            assert proc.poll() is None, log_file.read_text()[-3000:]
            assert time.monotonic() < deadline, "the trainer did not reach step 3"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)  # the script only, as the shutdown hook sends it
        proc.wait(timeout=180)
    finally:
        proc.kill()
        proc.wait()
    log = log_file.read_text()
    assert proc.returncode == 75, log[-3000:]
    progress = read_progress(s3, output)
    assert progress.state == "checkpointed" and progress.step >= 3
    assert_complete_checkpoint(s3, output, progress.step)
    assert "stop signal: the trainer checkpoints and exits" in log
    assert "torchrun exited with 1, rank 0 with 75" in log and "trainer exited with 75" in log
    assert "death signal" not in log  # torchrun's "Received SIGTERM death signal, shutting down workers"


# stands in for torchrun: a worker that needs 1 s after its SIGTERM (a checkpoint), writes rank 0's
# code and exits 75; this "torchrun" records any signal it gets itself and exits 1 after its worker
TORCHRUN_STUB = """#!/bin/bash
trap 'echo signalled >> {record}' TERM INT
bash -c 'trap "sleep 1; echo 75 > \\"\\$SPOTSHIFT_EXIT_CODE_FILE\\"; exit 75" TERM; touch {ready}; while :; do sleep 0.1; done' &
worker=$!
while kill -0 "$worker" 2>/dev/null; do wait "$worker"; done
exit 1
"""


def test_the_shutdown_hook_stops_the_trainer_through_the_script_and_waits_for_it(tmp_path):
    """The unit the script installs (network-online ordering, the grace as its stop timeout) and its
    ExecStop run as systemd runs it at shutdown: it returns once the trainer checkpointed and the
    script ended, torchrun never signalled."""
    bin_dir, units = tmp_path / "bin", tmp_path / "units"
    bin_dir.mkdir()
    units.mkdir()
    record, ready, systemctl = tmp_path / "torchrun-signals", tmp_path / "ready", tmp_path / "systemctl"
    python = bin_dir / "python3"
    python.write_text(TORCHRUN_STUB.format(record=record, ready=ready))
    (bin_dir / "systemctl").write_text(f'#!/bin/bash\necho "$*" >> {systemctl}\n')
    for path in (python, bin_dir / "systemctl"):
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    log_file = tmp_path / "train.log"
    script = render_user_data("s3://b/jobs/j/spec.json", log_file=str(log_file), shutdown_hook=str(units))
    proc = subprocess.Popen(["bash", "-c", script], env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    reaper = threading.Thread(target=proc.wait, daemon=True)  # as the script's parent does: no zombie for kill -0
    reaper.start()
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, log_file.read_text()
            time.sleep(0.05)
        unit = (units / "spotshift-trainer-stop.service").read_text()
        assert systemctl.read_text().splitlines() == ["daemon-reload", "start --no-block spotshift-trainer-stop.service"]
        assert "After=network-online.target" in unit and f"TimeoutStopSec={SHUTDOWN_GRACE_S}" in unit
        assert re.search(r"^ExecStart=/bin/true$", unit, re.M) and "RemainAfterExit=yes" in unit
        exec_stop = re.search(r"^ExecStop=(.*)$", unit, re.M).group(1)
        assert "$" not in exec_stop and "%" not in exec_stop  # nothing systemd would expand
        assert f"kill -TERM {proc.pid} " in exec_stop
        started = time.monotonic()
        stop = subprocess.run(["bash", "-c", exec_stop.removeprefix("/bin/bash -c ").strip("'")], timeout=30)
        assert stop.returncode == 0 and time.monotonic() - started >= 1  # it waited for the checkpoint
        reaper.join(timeout=5)
        assert proc.returncode == 75  # the script had ended when the stop returned
    finally:
        proc.kill()
        proc.wait()
    assert not record.exists()  # torchrun never saw the signal
    log = log_file.read_text()
    assert "stop signal: the trainer checkpoints and exits" in log and "torchrun exited with 1, rank 0 with 75" in log


def test_a_stop_signal_before_the_trainer_starts_still_uploads_the_log_and_ends_the_script(tmp_path):
    """During the install (here: a slow step before the trainer), the script exits 143 through
    finish(): the log is written and nothing is left running."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "trainer-started"
    (bin_dir / "python3").write_text(f"#!/bin/bash\ntouch {marker}\n")
    (bin_dir / "python3").chmod(0o755)
    log_file = tmp_path / "train.log"
    script = render_user_data("s3://b/jobs/j/spec.json", log_file=str(log_file), extra_env={"SLOW": "1"})
    script = script.replace('echo "spotshift bootstrap: starting trainer"',
                            'touch installing; sleep 0.5; echo "spotshift bootstrap: starting trainer"')
    proc = subprocess.Popen(["bash", "-c", script], env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, cwd=tmp_path)
    deadline = time.monotonic() + 10
    while not (tmp_path / "installing").exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=10) == 143
    log = log_file.read_text()
    assert "stop signal before the trainer started" in log and log.splitlines()[-1].startswith("spotshift bootstrap: exit 143")
    assert not marker.exists()
