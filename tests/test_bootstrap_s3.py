"""The rendered user-data run under bash against the moto server's S3, as on an instance: the
trainer wheel is fetched from artifacts/ and installed into a fresh environment (standing in for
the image's PyTorch env), the tiny trainer runs under torchrun to the end, the log is uploaded to
jobs/<id>/logs/<instance>.log and the machine powers off -- also when the wheel is broken; the log
is in S3 while the trainer still runs; the Hub token is read from a plain or a key/value secret in
Secrets Manager. Stubbed: `shutdown` (records its call). The real `aws` CLI talks to the moto server."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import time
import uuid
from pathlib import Path

import pytest

from deployments.local_aws import client, local_env
from spotshift.aws.trainer_artifact import TrainerWheel, build_trainer_wheel, install_requirements, publish_trainer_wheel
from training.bootstrap import render_user_data
from training.spec import TrainingSpec

REPO = Path(__file__).resolve().parents[1]
INSTANCE_ID = "i-0bootstrap0000001"
pytestmark = pytest.mark.skipif(shutil.which("aws") is None, reason="the aws CLI is not installed (the image has it)")


def fresh_env(root: Path) -> Path:
    """A new virtual environment whose only other packages are the project venv's third-party
    ones (torch, transformers, boto3: what the image's PyTorch env has), never the project's own
    `training` (the editable install's finder is not loaded from a plain path entry)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    site = next((root / "lib").glob("python3*/site-packages"))
    (site / "image_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root / "bin" / "python"


def shutdown_stub(bin_dir: Path, record: Path) -> None:
    path = bin_dir / "shutdown"
    path.write_text(f'#!/bin/bash\necho "$@" > {record}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def user_data_env(tmp_path: Path, endpoint: str) -> dict[str, str]:
    env = {**os.environ, **local_env(endpoint), "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
           "SPOTSHIFT_INSTANCE_ID": INSTANCE_ID, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    env.pop("HF_TOKEN", None)
    return env


def run_user_data(script: str, tmp_path: Path, endpoint: str, *bash_flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", *bash_flags, "-c", script], env=user_data_env(tmp_path, endpoint), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


def prepare(tmp_path: Path, s3, bucket: str, tiny_lm, wheel: TrainerWheel, max_steps: int = 6) -> tuple[str, str, Path]:
    """(spec uri, wheel uri, python of the fresh env) with the spec and the wheel in the bucket."""
    from training.contract import write_spec

    model_dir, dataset = tiny_lm
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    spec = TrainingSpec(job_id=job_id, model=str(model_dir), dataset=str(dataset), output=f"s3://{bucket}/jobs/{job_id}/",
                        max_steps=max_steps, batch_size=4, seq_len=32, checkpoint_every_steps=3, heartbeat_seconds=0.1,
                        control_poll_seconds=0.2)
    (tmp_path / "bin").mkdir()
    shutdown_stub(tmp_path / "bin", tmp_path / "shutdown")
    return write_spec(s3, spec), publish_trainer_wheel(s3, bucket, wheel), fresh_env(tmp_path / "image-env")


def script_for(spec_uri: str, wheel_uri: str, python: Path, tmp_path: Path) -> str:
    output = spec_uri.rsplit("/", 1)[0] + "/"
    return render_user_data(spec_uri, python=str(python), trainer_wheel_uri=wheel_uri, log_uri=output + "logs/",
                            gpus=1, log_file=str(tmp_path / "var" / "spotshift-train.log"), power_off=True)


@pytest.mark.slow
def test_the_user_data_installs_the_wheel_from_s3_trains_to_the_end_uploads_the_log_and_powers_off(
        moto_endpoint, s3, bucket, tiny_lm, tmp_path):
    from training.contract import read_progress

    spec_uri, wheel_uri, python = prepare(tmp_path, s3, bucket, tiny_lm, build_trainer_wheel(REPO))
    run = run_user_data(script_for(spec_uri, wheel_uri, python, tmp_path), tmp_path, moto_endpoint)

    output = spec_uri.rsplit("/", 1)[0] + "/"
    log = s3.get_object(Bucket=bucket, Key=f"{output.split('/', 3)[3]}logs/{INSTANCE_ID}.log")["Body"].read().decode()
    assert run.returncode == 0, log[-3000:]
    assert "trainer installed from " + wheel_uri in log and "trainer exited with 0" in log
    assert read_progress(s3, output).state == "done" and read_progress(s3, output).step == 6
    installed = subprocess.run([str(python), "-c", "import training; print(training.__file__)"], cwd=tmp_path,
                               capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert installed.stdout.startswith(str(tmp_path / "image-env")), installed  # the wheel's trainer, not the checkout
    assert (tmp_path / "shutdown").read_text().strip() == "-h now"


def wheel_with(data: bytes, hashed: bytes) -> TrainerWheel:
    """A wheel of `data` whose requirements name the hash of `hashed` (no other package)."""
    import hashlib

    requirements = install_requirements("", hashlib.sha256(hashed).hexdigest()).encode()
    return TrainerWheel(data=data, sha256=hashlib.sha256(requirements + data).hexdigest(), requirements=requirements)


@pytest.mark.parametrize("broken", [wheel_with(b"not a zip file", b"not a zip file"),
                                    wheel_with(build_trainer_wheel(REPO).data + b"tampered", build_trainer_wheel(REPO).data)],
                         ids=["not-a-wheel", "hash-mismatch"])
def test_a_broken_wheel_still_uploads_the_log_and_powers_off(moto_endpoint, s3, bucket, tiny_lm, tmp_path, broken):
    spec_uri, wheel_uri, python = prepare(tmp_path, s3, bucket, tiny_lm, broken)
    run = run_user_data(script_for(spec_uri, wheel_uri, python, tmp_path), tmp_path, moto_endpoint)

    output_key = spec_uri.split("/", 3)[3].rsplit("/", 1)[0]
    log = s3.get_object(Bucket=bucket, Key=f"{output_key}/logs/{INSTANCE_ID}.log")["Body"].read().decode()
    assert run.returncode != 0
    assert "starting trainer" not in log and f"exit {run.returncode}" in log
    assert (tmp_path / "shutdown").read_text().strip() == "-h now"


def test_a_checkpointed_stop_under_torchrun_exits_75_not_1(moto_endpoint, s3, bucket, tiny_lm, tmp_path):
    """torchrun exits 1 for a worker's 75; the user-data passes rank 0's own code on (the trainer is
    already installed here: the project's python)."""
    from training.contract import ControlRequest, read_progress, write_control

    spec_uri, _, _ = prepare(tmp_path, s3, bucket, tiny_lm, TrainerWheel(data=b"", sha256="0" * 64), max_steps=10_000)
    output = spec_uri.rsplit("/", 1)[0] + "/"
    write_control(s3, output, ControlRequest(request_id="stop-1", reason="test"))
    script = render_user_data(spec_uri, python=sys.executable, gpus=1, log_file=str(tmp_path / "train.log"))
    run = run_user_data(script, tmp_path, moto_endpoint)

    log = (tmp_path / "train.log").read_text()
    assert run.returncode == 75, log[-3000:]
    assert "torchrun exited with 1, rank 0 with 75" in log and "trainer exited with 75" in log
    progress = read_progress(s3, output)
    assert progress.state == "checkpointed" and progress.step < 10_000


def test_the_log_is_in_s3_while_the_trainer_runs_and_its_last_copy_holds_the_exit(moto_endpoint, s3, bucket, tiny_lm,
                                                                                 tmp_path):
    """The periodic upload (every 0.5 s here, every minute on EC2): the bootstrap's early lines are
    in S3 while the trainer still trains (it runs until a stop request the test writes once it has
    seen them); after the exit, the object holds the final line (the last write is finish()'s)."""
    from training.contract import ControlRequest, write_control

    spec_uri, _, _ = prepare(tmp_path, s3, bucket, tiny_lm, TrainerWheel(data=b"", sha256="0" * 64), max_steps=10_000)
    output = spec_uri.rsplit("/", 1)[0] + "/"
    key = f"{output.split('/', 3)[3]}logs/{INSTANCE_ID}.log"
    script = render_user_data(spec_uri, python=sys.executable, gpus=1, log_file=str(tmp_path / "train.log"),
                              log_uri=output + "logs/", log_upload_seconds=0.5)
    proc = subprocess.Popen(["bash", "-c", script], env=user_data_env(tmp_path, moto_endpoint), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen, deadline = "", time.monotonic() + 180
        while "starting trainer" not in seen:
            assert proc.poll() is None, f"the script exited before its log was in S3: {seen[-3000:]}"
            assert time.monotonic() < deadline, "no log in S3 while the script runs"
            time.sleep(0.2)
            try:
                seen = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
            except s3.exceptions.NoSuchKey:
                continue
        assert proc.poll() is None  # still running: the copy came from the loop, not from finish()
        assert "spotshift bootstrap: start" in seen and "spotshift bootstrap: exit" not in seen
        write_control(s3, output, ControlRequest(request_id="stop-log", reason="test"))
        proc.wait(timeout=240)
    finally:
        proc.kill()
        proc.wait()
    assert proc.stdout.read() == ""  # the loop writes nowhere but the log
    final = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    assert proc.returncode == 75, final[-3000:]
    assert final == (tmp_path / "train.log").read_text()
    assert final.splitlines()[-1].startswith("spotshift bootstrap: exit 75 ")


def python_stub(tmp_path: Path) -> Path:
    """A "$PYTHON" whose `-c` is the real python (the user-data parses the secret with it) and whose
    trainer writes the HF_TOKEN it was given to token."""
    path = tmp_path / "bin" / "image-python"
    path.write_text(f'#!/bin/bash\nif [ "$1" = -c ]; then exec {sys.executable} "$@"; fi\n'
                    f'printf %s "${{HF_TOKEN-unset}}" > {tmp_path / "token"}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


TOKEN = "hf_" + uuid.uuid4().hex


@pytest.mark.parametrize("secret, token", [(TOKEN, TOKEN),
                                           (json.dumps({"HF_TOKEN": TOKEN, "OTHER": "other-value-" + TOKEN}), TOKEN),
                                           ("12345" + TOKEN[3:9], "12345" + TOKEN[3:9])],
                         ids=["plain", "key-value", "plain-not-json"])
def test_the_hub_token_comes_from_a_plain_or_key_value_secret_and_is_never_logged(moto_endpoint, tmp_path, secret,
                                                                                  token):
    (tmp_path / "bin").mkdir()
    secret_id = f"spotshift/hf-token-{uuid.uuid4().hex[:8]}"
    client("secretsmanager", moto_endpoint).create_secret(Name=secret_id, SecretString=secret)
    script = render_user_data("s3://b/jobs/j/spec.json", python=str(python_stub(tmp_path)), hub_token_secret=secret_id,
                              log_file=str(tmp_path / "train.log"))
    run = run_user_data(script, tmp_path, moto_endpoint, "-x")  # traced: the trace goes to the log too

    log = (tmp_path / "train.log").read_text()
    assert run.returncode == 0, log[-3000:]
    assert (tmp_path / "token").read_text() == token
    for text in (log, run.stdout, run.stderr):
        assert token not in text and secret not in text
    assert "+ PYTHON=" in log and "+ echo 'spotshift bootstrap: starting trainer'" in log  # traced before and after


def test_a_key_value_secret_without_hf_token_fails_naming_the_secret_and_its_keys_not_the_values(moto_endpoint,
                                                                                                  tmp_path):
    (tmp_path / "bin").mkdir()
    secret_id = f"spotshift/hf-token-{uuid.uuid4().hex[:8]}"
    values = {"hf_token": TOKEN, "USER": "user-value-" + TOKEN}
    client("secretsmanager", moto_endpoint).create_secret(Name=secret_id, SecretString=json.dumps(values))
    script = render_user_data("s3://b/jobs/j/spec.json", python=str(python_stub(tmp_path)), hub_token_secret=secret_id,
                              log_file=str(tmp_path / "train.log"))
    run = run_user_data(script, tmp_path, moto_endpoint, "-x")

    log = (tmp_path / "train.log").read_text()
    assert run.returncode != 0 and f"spotshift bootstrap: exit {run.returncode}" in log
    assert f"the Hub token secret {secret_id} is a key/value secret without" in log
    assert "(its keys: USER, hf_token)" in log
    assert "starting trainer" not in log and not (tmp_path / "token").exists()
    for text in (log, run.stdout, run.stderr):
        assert all(value not in text for value in values.values())
