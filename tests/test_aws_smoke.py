"""`spotshift aws smoke` end to end on the moto server with the local backend: `spotshift aws setup`,
then the smoke's check, offer, estimate and a real train-job flow (the real trainer on a tiny model,
as a local process behind a moto instance) that is interrupted once and resumes; a cap below the
estimate launches nothing; a failing trainer and a Ctrl-C end with every instance terminated.
Service Quotas (moto knows no EC2 codes): botocore's Stubber, as in test_aws_setup."""

from __future__ import annotations

import argparse
import io
import re
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from deployments.aws_cli import run_aws
from deployments.smoke import SmokeOptions, run_smoke
from spotshift.models import EndReason, JobStatus
from spotshift.settings import Settings
from tests.aws_helpers import moto_clients, stubbed_quotas

REGION = "us-east-1"
pytestmark = [pytest.mark.xdist_group("prefect"), pytest.mark.timeout(300)]


@pytest.fixture
def account(moto_endpoint, aws_env, tmp_path) -> Settings:
    """A moto account after `spotshift aws setup`, and the settings that name its resources."""
    tag = uuid.uuid4().hex[:8]
    settings = Settings(home=tmp_path, bucket=f"spotshift-smoke-{tag}", trainer_role=f"smoke-{tag}",
                        instance_profile=f"smoke-{tag}", security_group=f"smoke-{tag}", regions=[REGION],
                        image_name_pattern="Deep Learning AMI*", compute_backend="local",
                        aws_endpoint_url=moto_endpoint, monitor_poll_seconds=0.3)
    args = argparse.Namespace(aws_action="setup", regions=None, bucket=None, delete_bucket=False)
    assert run_aws(args, settings=settings, clients=moto_clients(moto_endpoint), out=io.StringIO()) == 0
    return settings


def quota_clients(endpoint: str):
    return moto_clients(endpoint, stubs={"service-quotas": stubbed_quotas({})})


def started_since(endpoint: str, before: list[dict]) -> set[str]:
    """Instances alive now that were not alive `before` (other tests' leftovers in this moto region are
    not the smoke's; a fleet pass of the smoke may even have stopped them as orphans)."""
    return {i["InstanceId"] for i in alive(endpoint)} - {i["InstanceId"] for i in before}


def alive(endpoint: str) -> list[dict]:
    """Every instance of the region that is not gone, spotshift's or not."""
    ec2 = moto_clients(endpoint)("ec2", REGION)
    return [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
            if i["State"]["Name"] not in ("shutting-down", "terminated")]


def smoke(settings: Settings, endpoint: str, *, runtime_factory=None, max_usd: float = 0.25, **kw) -> tuple[int, str]:
    out = io.StringIO()
    code = run_smoke(SmokeOptions(region=REGION, max_usd=max_usd, yes=True), settings=settings,
                     clients=quota_clients(endpoint), bucket=settings.bucket, runtime_factory=runtime_factory,
                     out=out, **kw)
    return code, out.getvalue()


def job_of(out: str) -> str:
    return re.search(r"smoke-[0-9a-f]{12}", out).group(0)


@pytest.mark.slow
def test_the_smoke_passes_resumes_once_and_leaves_nothing_running(prefect_api, account, moto_endpoint, monkeypatch):
    from flows.runtime import Runtime
    from training.contract import JobPaths, read_latest, read_progress

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runtimes, before = [], alive(moto_endpoint)  # what other tests left in this moto region
    code, out = smoke(account, moto_endpoint, runtime_factory=lambda s: runtimes.append(Runtime.from_settings(s))
                      or runtimes[-1])
    runtimes[0].backend.close()
    print(out)
    assert code == 0, out
    assert "PASS" in out.splitlines()[-1], out
    job_id = job_of(out)
    rt = runtimes[0]
    workloads = sorted(rt.ledger.workloads(job_id), key=lambda w: w.started_at)
    assert [w.end_reason for w in workloads] == [EndReason.PREEMPTED, EndReason.COMPLETED], workloads
    assert rt.jobs.get(job_id).status is JobStatus.SUCCEEDED

    paths = JobPaths(account.bucket, job_id)
    progress = read_progress(rt.s3, paths.output)
    assert progress.state.value == "done" and progress.step == 20
    assert progress.instance_id == workloads[1].instance_id  # the second instance finished the job...
    assert 10 <= progress.resumed_from_step < 20  # ...from the first one's checkpoint
    first_checkpoint = rt.s3.list_objects_v2(Bucket=account.bucket, Prefix=paths.key("checkpoints/step-"))
    assert read_latest(rt.s3, paths.output).step >= progress.resumed_from_step
    assert first_checkpoint["KeyCount"] > 0
    assert started_since(moto_endpoint, before) == set()  # nothing of the smoke's left running in the region

    cost_line = next(line for line in out.splitlines() if line.strip().startswith("cost "))
    cost = float(cost_line.split("$", 1)[1].split()[0])
    assert 0 < cost <= 0.25, cost_line
    for phase in ("preflight (check)", "boot 1", "train to checkpoint", "interrupt 1", "boot 2 and resume",
                  "train to the end"):
        assert phase in out, out
    assert f"resumed from step {progress.resumed_from_step}" in out


def test_a_cap_below_the_estimate_is_refused_and_nothing_is_launched(account, moto_endpoint):
    before = alive(moto_endpoint)
    out = io.StringIO()
    args = argparse.Namespace(aws_action="smoke", region=REGION, max_usd=0.001, yes=True, regions=None, bucket=None)
    code = run_aws(args, settings=account, clients=quota_clients(moto_endpoint), out=out)
    text = out.getvalue()
    assert code == 2, text
    assert "refused: the smoke would cost about $" in text and "above the cap of $0.00" in text, text
    assert "nothing was launched" in text
    estimate = float(text.split("estimate: $", 1)[1].split()[0])
    assert estimate > 0.001
    assert alive(moto_endpoint) == before


def test_bad_input_is_refused_naming_the_field(capsys):
    from deployments.cli import _parser

    args = _parser().parse_args(["aws", "smoke", "--region", REGION])
    assert (args.region, args.max_usd, args.yes) == (REGION, 0.25, False)
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(["aws", "smoke", "--region", "mars-1"])
    assert exit_.value.code == 2 and "argument --region: invalid choice: 'mars-1'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="region 'mars-1' is not allowed. Choose between .*us-east-1"):
        SmokeOptions(region="mars-1")
    with pytest.raises(ValueError, match="max_usd"):
        SmokeOptions(region=REGION, max_usd=0)


def stand_in_trainer(settings: Settings, endpoint: str, code: str):
    """A runtime factory whose instances run `python -c code` instead of the trainer (a stand-in
    process: a trainer that crashes or hangs is what is tested, not training)."""
    from flows.runtime import Runtime
    from spotshift.aws.local_backend import LocalBackend

    made = []

    def factory(s: Settings):
        rt = Runtime.from_settings(s)
        rt.backend.close()
        made.append(replace(rt, backend=LocalBackend(endpoint, Path(s.home) / "stand-ins", grace_s=5.0,
                                                     trainer_cmd=[sys.executable, "-c", code])))
        return made[-1]
    return factory, made


def test_a_trainer_that_crashes_fails_the_smoke_at_its_checkpoint_step(prefect_api, account, moto_endpoint):
    factory, made = stand_in_trainer(account, moto_endpoint, "import sys; sys.exit(3)")
    before = alive(moto_endpoint)  # what other tests left in this moto region
    code, out = smoke(account, moto_endpoint, runtime_factory=factory)
    made[0].backend.close()
    print(out)
    assert code == 1, out
    last = out.splitlines()[-1]
    assert last.startswith("FAIL at step checkpoint:") and "ended before a checkpoint at step 10" in last, out
    assert "exit code 3" in last or "never reported" in last, last
    assert "instance 1 i-" in out and "instance 2" not in out  # the refused relaunch started no instance
    assert started_since(moto_endpoint, before) == set()
    job = made[0].jobs.get(job_of(out))
    assert job.status is JobStatus.FAILED  # not left for the reaper to adopt


def test_ctrl_c_terminates_what_the_smoke_launched(prefect_api, account, moto_endpoint):
    factory, made = stand_in_trainer(account, moto_endpoint, "import time; time.sleep(120)")  # a trainer that hangs

    def interrupting(s: Settings):
        rt = factory(s)

        def sleep(seconds: float) -> None:  # the monitor's first wait: the user presses Ctrl-C
            if rt.backend.list():
                raise KeyboardInterrupt
        made[-1] = replace(rt, sleep=sleep)
        return made[-1]

    before = alive(moto_endpoint)  # what other tests left in this moto region
    code, out = smoke(account, moto_endpoint, runtime_factory=interrupting)
    print(out)
    rt = made[0]
    try:
        assert code == 1, out
        assert out.splitlines()[-1].startswith("FAIL at step checkpoint: interrupted (Ctrl-C)"), out
        job_id = job_of(out)
        (workload,) = rt.ledger.workloads(job_id)
        assert started_since(moto_endpoint, before) == set()  # the instance that was running is terminated
        assert rt.backend.pid(workload.instance_id) is None  # and its trainer process is gone
        assert workload.ended_at is not None  # billed and closed
        assert rt.jobs.get(job_id).status is JobStatus.FAILED
    finally:
        rt.backend.close()


def launch_request(job_id: str, workload_id: str):
    from datetime import UTC, datetime

    from spotshift.aws.ec2 import LaunchRequest
    from spotshift.models import Market, Offer

    offer = Offer(instance_type="g4dn.xlarge", gpu="T4", gpu_count=1, gpu_memory_gib=16, vcpus=4, memory_gib=16,
                  region=REGION, zone=f"{REGION}a", market=Market.SPOT, usd_per_hour=1.0,
                  observed_at=datetime.now(UTC), source="test")
    return LaunchRequest(job_id=job_id, workload_id=workload_id, offer=offer,
                         spec_uri=f"s3://unused/jobs/{job_id}/spec.json", image_id="ami-999844e0")


def test_the_smoke_backend_refuses_an_unexpected_launch_and_stops_at_the_cap(moto_endpoint, s3, bucket, tmp_path):
    """The script's own guards, on the local backend with a hanging stand-in trainer and a clock
    where one wall second is an hour: a relaunch before the interruption is refused without an
    instance, and the instances' cost passing the cap fails the step it happened in."""
    from datetime import UTC, datetime

    from spotshift.aws.local_backend import LocalBackend
    from spotshift.aws.smoke import SmokeBackend
    from spotshift.clock import VirtualClock
    from spotshift.smoke import SmokeFailed, SmokeStep, SmokeTimeline
    from training.contract import JobPaths

    clock = VirtualClock(start=datetime.now(UTC), speedup=3600.0)
    inner = LocalBackend(moto_endpoint, tmp_path, clock=clock, grace_s=2.0, watch_interval_s=None,
                         trainer_cmd=[sys.executable, "-c", "import time; time.sleep(60)"])
    job_id = f"smoke-{uuid.uuid4().hex[:12]}"
    backend = SmokeBackend(inner, s3=s3, paths=JobPaths(bucket, job_id), clock=clock, timeline=SmokeTimeline(),
                           usd_per_hour=1.0, max_usd=0.25, observe_every_s=0.0)
    try:
        first = backend.start(launch_request(job_id, "wl-1"))
        assert backend.start(launch_request(job_id, "wl-1")).instance_id == first.instance_id  # a retry passes
        with pytest.raises(SmokeFailed) as early:
            backend.start(launch_request(job_id, "wl-2"))
        assert early.value.step is SmokeStep.CHECKPOINT and "its trainer never reported" in str(early.value)
        assert [i.instance_id for i in inner.list(job_id)] == [first.instance_id]  # nothing more launched
        with pytest.raises(SmokeFailed) as capped:
            for _ in range(100):
                backend.poll()
                __import__("time").sleep(0.05)
        assert capped.value.step is SmokeStep.CHECKPOINT and "past the cap of $0.25" in str(capped.value)
    finally:
        backend.close()
    assert inner.list(job_id) == []
