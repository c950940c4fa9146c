"""The rendered user-data run under bash against the moto server's S3, as on an instance: the
trainer wheel is fetched from artifacts/ and installed into a fresh environment (standing in for
the image's PyTorch env), the tiny trainer runs under torchrun to the end, the log is uploaded to
jobs/<id>/logs/<instance>.log and the machine powers off -- also when the wheel is broken.
Stubbed: `shutdown` (records its call). The real `aws` CLI talks to the moto server."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path

import pytest

from deployments.local_aws import local_env
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


def run_user_data(script: str, tmp_path: Path, endpoint: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **local_env(endpoint), "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
           "SPOTSHIFT_INSTANCE_ID": INSTANCE_ID, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    return subprocess.run(["bash", "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)


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
