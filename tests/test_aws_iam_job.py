"""A real train-job flow run under IAM enforcement (moto server with INITIAL_NO_AUTH_ACTION_COUNT
and MOTO_ENABLE_AMI_VALIDATION): after `spotshift aws setup` by a user holding only the setup
policy, the job is preempted in us-east-1a, resumes in us-east-2a and moves to us-west-2a, each
region launching its own image. The orchestrator (flow, monitor, backend) holds only the runtime
policy;
the trainer processes hold only the trainer role's policy (an IAM user standing in for the
instance profile, which local processes cannot assume). moto's limits: see test_aws_iam_enforced."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from deployments.demo_market import DemoTimeline, demo_market
from deployments.local_aws import moto_server_process
from spotshift.aws.iam import trainer_policy
from spotshift.clock import VirtualClock
from spotshift.models import ApprovalPolicy, EndReason, JobCreate
from tests.aws_helpers import moto_clients
from tests.moto_iam import for_moto
from tests.test_aws_iam_enforced import ADMIN_BOOTSTRAP_CALLS, aws, printed_policy, user_with

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("prefect"), pytest.mark.timeout(600)]
REGIONS = ["us-east-1", "us-east-2", "us-west-2"]
SPEEDUP = 60.0


def credentials(key_secret: tuple[str, str]) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": key_secret[0], "AWS_SECRET_ACCESS_KEY": key_secret[1]}


def upload_inputs(s3, bucket: str, tiny_lm) -> tuple[str, str]:
    model_dir, dataset = tiny_lm
    for path in sorted(model_dir.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"artifacts/inputs/tiny/{path.relative_to(model_dir).as_posix()}")
    s3.upload_file(str(dataset), bucket, "artifacts/inputs/corpus.jsonl")
    return f"s3://{bucket}/artifacts/inputs/tiny/", f"s3://{bucket}/artifacts/inputs/corpus.jsonl"


def test_a_job_is_preempted_and_moves_across_regions_with_only_the_printed_policies(prefect_api, tiny_lm, tmp_path,
                                                                                     monkeypatch):
    from blocks.stores import open_job_store, open_ledger, open_market_history
    from flows.runtime import Runtime
    from flows.controller import run_job
    from spotshift.aws.bucket_owner import expect_bucket_owner
    from spotshift.aws.images import settings_resolver
    from spotshift.aws.launch_env import LaunchEnvironment
    from spotshift.aws.local_backend import LocalBackend
    from spotshift.aws.network import LaunchNetwork
    from spotshift.settings import Settings

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    env = {"INITIAL_NO_AUTH_ACTION_COUNT": str(ADMIN_BOOTSTRAP_CALLS), "MOTO_ENABLE_AMI_VALIDATION": "true"}
    with moto_server_process(env=env) as endpoint:
        boot = moto_clients(endpoint, key="boot", secret="boot")
        admin_key, admin_secret = user_with(boot("iam", "us-east-1"), {
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
        admin = moto_clients(endpoint, key=admin_key, secret=admin_secret)
        images = {r: admin("ec2", r).register_image(Name=f"spotshift test image {r}", RootDeviceName="/dev/sda1")
                  ["ImageId"] for r in REGIONS}
        tag = uuid.uuid4().hex[:8]
        settings = Settings(home=tmp_path, bucket=f"spotshift-job-{tag}", regions=REGIONS, image_ids=images,
                            aws_endpoint_url=endpoint, heartbeat_stall_seconds=90 * SPEEDUP)
        setup_keys = user_with(admin("iam", "us-east-1"), for_moto(printed_policy(settings, admin, "setup")))
        code, out = aws("setup", settings, moto_clients(endpoint, key=setup_keys[0], secret=setup_keys[1]))
        assert code == 0, out
        orch_keys = user_with(admin("iam", "us-east-1"), for_moto(printed_policy(settings, admin)))  # runtime
        orch = moto_clients(endpoint, key=orch_keys[0], secret=orch_keys[1])
        trainer_keys = user_with(admin("iam", "us-east-1"), for_moto(trainer_policy(bucket=settings.bucket)))
        s3 = expect_bucket_owner(orch("s3", "us-east-1"), "123456789012")
        model, dataset = upload_inputs(s3, settings.bucket, tiny_lm)

        start = datetime.now(UTC).replace(microsecond=0)
        clock = VirtualClock(start=start, speedup=SPEEDUP)
        market = demo_market(start, DemoTimeline(lost_minute=15, cheap_minute=35))
        ec2 = lambda r: orch("ec2", r)  # noqa: E731
        backend = LocalBackend(endpoint, tmp_path / "instances", oracle=market, clock=clock, grace_s=15.0,
                               regions=REGIONS, credentials=credentials(orch_keys),
                               trainer_credentials=credentials(trainer_keys),
                               launch_env=LaunchEnvironment(images=settings_resolver(settings, orch),
                                                            network=LaunchNetwork(ec2, security_group=settings.security_group)))
        history = open_market_history(settings)
        history.record(market.past_observations(clock()), source="replay")
        rt = Runtime(settings=settings, jobs=open_job_store(settings), ledger=open_ledger(settings), s3=s3,
                     market=market, backend=backend, clock=clock, history=history, poll_seconds=0.3,
                     rescout_seconds=2.0, min_step_seconds=0.15, on_demand_prices={"p3.2xlarge": 3.06}, image_id=None)
        request = JobCreate.model_validate(dict(
            name="iam-job", model=model, dataset=dataset, max_steps=450, batch_size=4, seq_len=32,
            checkpoint_every_steps=10, budget_usd=50, regions=REGIONS, instance_types=["p3.2xlarge"],
            deadline=clock() + timedelta(hours=48), idempotency_key=f"iam-{tag}",
            approval=ApprovalPolicy(max_auto_plan_usd=50, min_auto_saving_usd=0.01)), context={"now": clock()})
        job = rt.jobs.create(request, now=clock())
        try:
            summary = run_job(job.id, runtime=rt)
        finally:
            backend.close()
        workloads = sorted(rt.ledger.workloads(job.id), key=lambda w: w.started_at)

        assert summary["status"] == "succeeded" and summary["steps"] == 450, json.dumps(summary, default=str)
        assert [w.zone for w in workloads] == ["us-east-1a", "us-east-2a", "us-west-2a"], workloads
        assert [w.end_reason for w in workloads] == [EndReason.PREEMPTED, EndReason.MIGRATED, EndReason.COMPLETED]
        launched = {w.zone[:-1]: admin("ec2", w.zone[:-1]).describe_instances(InstanceIds=[w.instance_id])
                    ["Reservations"][0]["Instances"][0] for w in workloads}
        assert {r: i["ImageId"] for r, i in launched.items()} == images  # each region its own image
        assert all(i["State"]["Name"] == "terminated" for i in launched.values())
        final = s3.list_objects_v2(Bucket=settings.bucket, Prefix=f"jobs/{job.id}/final/")["Contents"]
        assert any(o["Key"].endswith("model.safetensors") for o in final)
