"""The local compute backend: real moto-server instances, real trainer processes (a test double of
the training CLI, tests/fake_trainer.py), spot interruptions driven by a capacity oracle."""

from __future__ import annotations

import json
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spotshift.aws.compute import ComputeBackend, make_backend
from spotshift.aws.local_backend import MOTO_IMAGE_ID, LocalBackend, trainer_command
from spotshift.aws.ec2 import LaunchRequest
from spotshift.models import Market, Offer
from training.spec import TrainingSpec
from tests.waiting import wait_for

FAKE_TRAINER = Path(__file__).with_name("fake_trainer.py")
NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)


class SwitchableCapacity:
    """A CapacityOracle whose zones lose capacity when a test says so."""

    def __init__(self) -> None:
        self.lost: set[str] = set()

    def available(self, zone: str, now: datetime) -> bool:
        return zone not in self.lost


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (PID 1 here may not reap orphans)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False




def read_json(s3, bucket: str, key: str) -> dict | None:
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def launch_request(s3, bucket: str, *, max_steps: int, market: Market = Market.SPOT,
                   zone: str = "us-east-1a") -> LaunchRequest:
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    spec = TrainingSpec(job_id=job_id, model="tiny", dataset=f"s3://{bucket}/data.txt",
                        output=f"s3://{bucket}/jobs/{job_id}/", max_steps=max_steps)
    s3.put_object(Bucket=bucket, Key=f"jobs/{job_id}/spec.json", Body=spec.model_dump_json().encode())
    offer = Offer(instance_type="p3.2xlarge", gpu="V100", gpu_count=1, gpu_memory_gib=16, vcpus=8, memory_gib=61,
                  region=zone[:-1], zone=zone, market=market, usd_per_hour=0.95, observed_at=NOW, source="test")
    return LaunchRequest(job_id=job_id, workload_id=f"wl-{uuid.uuid4().hex[:12]}", flow_run_id="fr-1", offer=offer,
                         spec_uri=f"s3://{bucket}/jobs/{job_id}/spec.json", user_data="#!/bin/bash\n",
                         image_id=MOTO_IMAGE_ID)


@pytest.fixture
def oracle() -> SwitchableCapacity:
    return SwitchableCapacity()


@pytest.fixture
def make_local(moto_endpoint, tmp_path, oracle):
    backends = []

    def make(*trainer_args: str, grace_s: float = 5.0, watch_interval_s: float | None = None) -> LocalBackend:
        backend = LocalBackend(moto_endpoint, tmp_path / "work", oracle=oracle, clock=lambda: NOW,
                               trainer_cmd=[sys.executable, str(FAKE_TRAINER), *trainer_args],
                               grace_s=grace_s, watch_interval_s=watch_interval_s)
        backends.append(backend)
        return backend

    yield make
    for backend in backends:
        backend.close()


def collect(backend: LocalBackend, kind: str, timeout_s: float = 15.0) -> list:
    """poll() until an event of `kind` arrives; every event seen so far."""
    seen = []

    def arrived():
        seen.extend(backend.poll())
        return any(e.kind == kind for e in seen)

    wait_for(arrived, timeout_s, f"a {kind!r} event")
    return seen


# --- the plan (pure) ---------------------------------------------------------------------------


def test_the_trainer_gets_the_spec_and_only_the_moto_servers_dummy_credentials():
    parent = {"PATH": "/usr/bin", "AWS_PROFILE": "prod", "AWS_SECRET_ACCESS_KEY": "real-secret",
              "AWS_SESSION_TOKEN": "real-token", "HF_HUB_OFFLINE": "1"}
    cmd, env = trainer_command(["python", "-m", "training"], "s3://b/jobs/j/spec.json", "i-0abc",
                               "http://127.0.0.1:5555", "us-east-1", parent)
    assert cmd == ["python", "-m", "training", "--spec", "s3://b/jobs/j/spec.json"]
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5555" and env["AWS_SECRET_ACCESS_KEY"] == "testing"
    assert "AWS_PROFILE" not in env and "AWS_SESSION_TOKEN" not in env
    assert env["SPOTSHIFT_INSTANCE_ID"] == "i-0abc" and env["PATH"] == "/usr/bin" and env["HF_HUB_OFFLINE"] == "1"


def test_make_backend_knows_local_and_ec2_and_names_them_on_a_typo(moto_endpoint, tmp_path):
    backend = make_backend("local", endpoint_url=moto_endpoint, work_dir=tmp_path, watch_interval_s=None)
    assert isinstance(backend, LocalBackend) and isinstance(backend, ComputeBackend)
    backend.close()
    with pytest.raises(ValueError, match="unknown compute backend 'lokal'. Choose between ec2, local"):
        make_backend("lokal")


# --- processes and instances -------------------------------------------------------------------


def test_a_trainer_that_finishes_ends_its_instance(make_local, s3, bucket):
    backend = make_local()
    req = launch_request(s3, bucket, max_steps=5)
    launched = backend.start(req)
    assert launched.state == "running" and backend.state(launched.instance_id) == "running"
    assert backend.start(req).instance_id == launched.instance_id  # a retried start: one instance, one trainer
    assert [i.instance_id for i in backend.list(req.job_id)] == [launched.instance_id]

    events = collect(backend, "exited")
    assert [(e.kind, e.instance_id, e.exit_code) for e in events] == [("exited", launched.instance_id, 0)]
    progress = read_json(s3, bucket, f"jobs/{req.job_id}/progress.json")
    assert (progress["state"], progress["step"], progress["instance_id"]) == ("done", 5, launched.instance_id)
    assert backend.state(launched.instance_id) == "terminated"
    assert backend.list(req.job_id) == []


def test_a_lost_zone_interrupts_the_trainer_which_checkpoints_and_exits_75(make_local, s3, bucket, oracle):
    backend = make_local(watch_interval_s=0.1)  # the watcher thread delivers it, no poll() needed
    req = launch_request(s3, bucket, max_steps=100_000, zone="us-east-1a")
    launched = backend.start(req)
    wait_for(lambda: (read_json(s3, bucket, f"jobs/{req.job_id}/progress.json") or {}).get("step", 0) >= 1,
             what="the first heartbeat")

    oracle.lost.add("us-east-1a")
    wait_for(lambda: backend.state(launched.instance_id) == "terminated", what="the instance to be terminated")
    events = backend.poll()
    assert [(e.kind, e.exit_code) for e in events] == [("interruption_notice", None), ("preempted", 75)]
    assert all(e.workload_id == req.workload_id and e.zone == "us-east-1a" for e in events)
    marker = read_json(s3, bucket, f"jobs/{req.job_id}/stopped-by-sigterm.json")
    progress = read_json(s3, bucket, f"jobs/{req.job_id}/progress.json")
    assert progress["state"] == "checkpointed" and marker["step"] == progress["step"] >= 1
    assert backend.log_path(launched.instance_id).exists()


def test_a_trainer_deaf_to_sigterm_is_killed_after_the_grace_period_with_its_children(make_local, s3, bucket, oracle):
    backend = make_local("--ignore-sigterm", "--spawn-child", grace_s=0.5)
    req = launch_request(s3, bucket, max_steps=100_000, zone="us-east-1b")
    launched = backend.start(req)
    child = wait_for(lambda: (read_json(s3, bucket, f"jobs/{req.job_id}/progress.json") or {}).get("child_pid"),
                     what="the trainer's child")
    trainer_pid = backend.pid(launched.instance_id)

    oracle.lost.add("us-east-1b")
    started = time.monotonic()
    events = collect(backend, "preempted")
    assert time.monotonic() - started >= 0.5
    assert [(e.kind, e.exit_code) for e in events] == [("interruption_notice", None), ("preempted", -9)]
    assert not alive(trainer_pid) and wait_for(lambda: not alive(child), 5, "the grandchild to die")
    assert backend.state(launched.instance_id) == "terminated"


def test_on_demand_is_never_interrupted_and_stop_leaves_nothing_behind(make_local, s3, bucket, oracle):
    backend = make_local("--spawn-child", grace_s=2)
    req = launch_request(s3, bucket, max_steps=100_000, market=Market.ON_DEMAND, zone="us-east-1c")
    launched = backend.start(req)
    child = wait_for(lambda: (read_json(s3, bucket, f"jobs/{req.job_id}/progress.json") or {}).get("child_pid"),
                     what="the trainer's child")
    oracle.lost.add("us-east-1c")
    assert backend.poll() == [] and backend.state(launched.instance_id) == "running"

    trainer_pid = backend.pid(launched.instance_id)
    backend.stop(launched.instance_id, "test is done")
    assert not alive(trainer_pid) and wait_for(lambda: not alive(child), 5, "the grandchild to die")
    assert backend.state(launched.instance_id) == "terminated" and backend.pid(launched.instance_id) is None
    # stop() sent SIGTERM: the trainer had time to checkpoint and say so
    assert read_json(s3, bucket, f"jobs/{req.job_id}/progress.json")["state"] == "checkpointed"
    assert backend.poll() == []


def test_close_stops_every_trainer_and_terminates_every_instance(make_local, s3, bucket):
    backend = make_local(watch_interval_s=0.1)
    requests = [launch_request(s3, bucket, max_steps=100_000, zone=z) for z in ("us-east-1a", "us-east-2a")]
    launched = [backend.start(r) for r in requests]
    pids = [backend.pid(i.instance_id) for i in launched]
    assert all(alive(p) for p in pids)

    backend.close()
    assert not any(alive(p) for p in pids)
    assert [backend.state(i.instance_id) for i in launched] == ["terminated", "terminated"]
    with pytest.raises(RuntimeError, match="closed"):
        backend.start(requests[0])


# --- the real trainer --------------------------------------------------------------------------


@pytest.mark.slow
def test_the_real_trainer_is_preempted_then_resumes_elsewhere_to_a_final_model(
        moto_endpoint, tmp_path, s3, bucket, oracle, tiny_lm, monkeypatch):
    from training.contract import read_latest, read_progress, write_spec
    from training.exitcodes import EXIT_CHECKPOINTED, EXIT_DONE

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the trainer processes
    model_dir, dataset = tiny_lm
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    spec = TrainingSpec(job_id=job_id, model=str(model_dir), dataset=str(dataset), output=f"s3://{bucket}/jobs/{job_id}/",
                        max_steps=20, batch_size=4, seq_len=32, checkpoint_every_steps=5, heartbeat_seconds=0.1,
                        control_poll_seconds=0.2, min_step_seconds=0.05)
    spec_uri = write_spec(s3, spec)

    def request(zone: str) -> LaunchRequest:
        offer = Offer(instance_type="p3.2xlarge", gpu="V100", gpu_count=1, gpu_memory_gib=16, vcpus=8, memory_gib=61,
                      region=zone[:-1], zone=zone, market=Market.SPOT, usd_per_hour=0.95, observed_at=NOW,
                      source="test")
        return LaunchRequest(job_id=job_id, workload_id=f"wl-{uuid.uuid4().hex[:12]}", offer=offer, spec_uri=spec_uri,
                             image_id=MOTO_IMAGE_ID)

    with LocalBackend(moto_endpoint, tmp_path / "work", oracle=oracle, clock=lambda: NOW, grace_s=20,
                      watch_interval_s=None) as backend:
        first = backend.start(request("us-east-1a"))

        def first_checkpoint() -> bool:
            early = backend.poll()
            assert not early, f"{early}: {backend.log_path(first.instance_id).read_text()[-2000:]}"
            return read_latest(s3, spec.output) is not None

        wait_for(first_checkpoint, 60, "the first checkpoint")
        oracle.lost.add("us-east-1a")
        events = collect(backend, "preempted", 30)
        assert [(e.kind, e.exit_code) for e in events] == [("interruption_notice", None),
                                                          ("preempted", EXIT_CHECKPOINTED)], \
            backend.log_path(first.instance_id).read_text()[-2000:]
        stopped_at = read_latest(s3, spec.output).step
        assert read_progress(s3, spec.output).state == "checkpointed" and 5 <= stopped_at < 20
        assert backend.state(first.instance_id) == "terminated"

        second = backend.start(request("us-east-2a"))
        events = collect(backend, "exited", 60)
        assert [(e.instance_id, e.exit_code) for e in events] == [(second.instance_id, EXIT_DONE)], \
            backend.log_path(second.instance_id).read_text()[-2000:]
        assert read_progress(s3, spec.output).step == 20
        final = s3.list_objects_v2(Bucket=bucket, Prefix=f"jobs/{job_id}/final/")["Contents"]
        assert any(o["Key"].endswith("model.safetensors") for o in final)
        assert backend.state(second.instance_id) == "terminated"
