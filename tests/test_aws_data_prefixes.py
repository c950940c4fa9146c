"""The user's own data on EC2 jobs (#20.1): `spotshift aws setup --data s3://bucket/prefix` grants
both roles read there; submit refuses an S3 input outside every readable prefix (naming the field,
the granted prefixes and the command that grants it) and uploads a local model or dataset under the
job's prefix; model-metadata fails once, naming the key, when S3 refuses the model's config.json.

The pure decisions run without AWS; submit runs against the session's moto server; setup, the
refused model read and a whole job run against a moto server with IAM enforcement, each identity
holding only the printed policy (tests/moto_iam.py: moto evaluates S3 resources but no conditions)."""

from __future__ import annotations

import argparse
import io
import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from blocks.stores import open_job_store, open_ledger
from deployments import api
from flows.runtime import Runtime
from spotshift.job_inputs import InputsRefused, job_inputs, s3_refusals, upload_name
from spotshift.models import JobCreate
from spotshift.settings import Settings
from tasks.workloads import training_spec

NOW = datetime.now(UTC).replace(microsecond=0)
REGIONS = ["us-east-1"]
SPEEDUP = 60.0


def job(**fields) -> JobCreate:
    body = dict(model="gpt2", dataset="s3://user-data/data/corpus.jsonl", max_steps=10, budget_usd=5,
                deadline=NOW + timedelta(days=1))
    return JobCreate.model_validate({**body, **fields})


# --- the decision (pure) -------------------------------------------------------------------------


def test_an_s3_input_outside_every_readable_prefix_is_refused_naming_field_prefixes_and_command():
    request = job(model="s3://user-data/models/base", dataset="s3://user-data/other/corpus.jsonl")
    refusals = s3_refusals(request, bucket="spotshift-jobs", data_prefixes=["s3://user-data/models/"])
    assert [(r.field, r.value) for r in refusals] == [("dataset", "s3://user-data/other/corpus.jsonl")]
    reason = refusals[0].reason
    assert "`spotshift aws setup --data s3://user-data/other/`" in reason  # the dataset's folder
    assert "s3://spotshift-jobs/jobs/, s3://user-data/models/" in reason  # what may be read today
    assert "SPOTSHIFT_DATA_PREFIXES" in reason


def test_what_the_roles_may_read_is_accepted():
    granted = ["s3://user-data/models/base/", "s3://user-data/data"]
    for request in (job(model="s3://user-data/models/base"),  # the trainer lists models/base/
                    job(model="s3://user-data/models/base/", dataset="s3://user-data/data-2024/c.txt"),
                    job(model="s3://spotshift-jobs/jobs/job-0123/final/"),  # an earlier job's final model
                    job(dataset="hf://datasets/karpathy/tiny_shakespeare")):
        assert s3_refusals(request, bucket="spotshift-jobs", data_prefixes=granted) == [], request
    refused = s3_refusals(job(model="s3://user-data/models/basement/"), bucket="spotshift-jobs", data_prefixes=granted)
    assert [r.field for r in refused] == ["model"]  # models/base/ does not cover models/basement/
    assert [r.field for r in s3_refusals(job(), bucket="b-1", data_prefixes=[])] == ["dataset"]


def test_an_output_bucket_the_roles_cannot_write_is_refused():
    refused = s3_refusals(job(output_bucket="elsewhere"), bucket="spotshift-jobs", data_prefixes=["s3://user-data/"])
    assert [(r.field, r.value) for r in refused] == [("output_bucket", "elsewhere")]
    assert "spotshift-jobs" in refused[0].reason


def test_inputs_are_classified_and_odd_file_names_get_a_valid_object_name(tmp_path):
    (tmp_path / "model").mkdir()
    inputs = job_inputs(job(model=str(tmp_path / "model"), dataset=str(tmp_path / "c.jsonl")))
    assert [(i.field, i.kind) for i in inputs] == [("model", "local"), ("dataset", "local")]
    assert upload_name("corpus-2024.jsonl") == "corpus-2024.jsonl"
    assert upload_name("my corpus (v2).jsonl") == "dataset.jsonl"


# --- submit (moto S3) ------------------------------------------------------------------------------


def ec2_runtime(tmp_path: Path, s3, bucket: str, **settings) -> Runtime:
    s = Settings(home=tmp_path, bucket=bucket, compute_backend="ec2", **settings)
    return Runtime(settings=s, jobs=open_job_store(s), ledger=open_ledger(s), s3=s3, market=None, backend=None)


def objects(s3, bucket: str) -> dict[str, bytes]:
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def test_submit_refuses_an_input_outside_every_granted_prefix_and_stores_nothing(tmp_path, s3, bucket):
    rt = ec2_runtime(tmp_path, s3, bucket, data_prefixes=["s3://user-data/models/"])
    with pytest.raises(InputsRefused) as refused:
        api.submit(job(model="s3://user-data/models/base/"), run="none", runtime=rt)
    assert [r.field for r in refused.value.refusals] == ["dataset"]
    assert "dataset 's3://user-data/data/corpus.jsonl'" in str(refused.value)
    assert "spotshift aws setup --data s3://user-data/data/" in str(refused.value)
    assert rt.jobs.list() == [] and objects(s3, bucket) == {}


def test_a_local_model_and_dataset_are_uploaded_under_the_job_and_its_spec_points_there(tmp_path, s3, bucket,
                                                                                          tiny_lm, caplog):
    model_dir, dataset = tiny_lm
    rt = ec2_runtime(tmp_path, s3, bucket)
    shown = []
    with caplog.at_level("INFO", logger="spotshift.submit"):
        job_id = api.submit(job(model=str(model_dir), dataset=str(dataset), idempotency_key="local-1"), run="none",
                            runtime=rt, on_upload=shown.append)
    stored = rt.jobs.get(job_id)
    model_uri = f"s3://{bucket}/jobs/{job_id}/inputs/model/"
    dataset_uri = f"s3://{bucket}/jobs/{job_id}/inputs/dataset/corpus.jsonl"
    assert (stored.request.model, stored.request.dataset) == (model_uri, dataset_uri)
    spec = training_spec(stored, bucket)
    assert (spec.model, spec.dataset) == (model_uri, dataset_uri)
    local = {f"jobs/{job_id}/inputs/model/{p.relative_to(model_dir).as_posix()}": p.read_bytes()
             for p in model_dir.rglob("*") if p.is_file()}
    local[f"jobs/{job_id}/inputs/dataset/corpus.jsonl"] = dataset.read_bytes()
    assert objects(s3, bucket) == local  # every byte, nothing else
    model_bytes = sum(len(b) for k, b in local.items() if "/model/" in k)
    assert [(u.field, u.bytes, u.files) for u in shown] == [("model", model_bytes, len(local) - 1),
                                                           ("dataset", dataset.stat().st_size, 1)]
    assert all(u.seconds >= 0 for u in shown)
    assert f"to {model_uri} in " in caplog.text and "uploaded dataset" in caplog.text
    events = [e.data for e in stored.events if e.kind == "input-uploaded"]
    assert [(e["field"], e["uri"], e["bytes"]) for e in events] == [("model", model_uri, model_bytes),
                                                                   ("dataset", dataset_uri, dataset.stat().st_size)]
    again = api.submit(job(model=str(model_dir), dataset=str(dataset), idempotency_key="local-1"), run="none",
                       runtime=rt, on_upload=shown.append)
    assert again == job_id and len(shown) == 2 and objects(s3, bucket) == local  # nothing uploaded twice


def test_a_missing_unreadable_or_too_large_local_input_is_refused_before_anything_is_uploaded(tmp_path, s3, bucket,
                                                                                              tiny_lm):
    model_dir, dataset = tiny_lm
    rt = ec2_runtime(tmp_path, s3, bucket)
    with pytest.raises(InputsRefused) as missing:
        api.submit(job(model=str(model_dir), dataset=str(tmp_path / "nowhere.jsonl")), run="none", runtime=rt)
    assert [(r.field, r.reason) for r in missing.value.refusals] == [
        ("dataset", "no such file or directory on this machine")]
    small = ec2_runtime(tmp_path / "small", s3, bucket, max_input_upload_bytes=1024)
    with pytest.raises(InputsRefused) as too_big:
        api.submit(job(model=str(model_dir), dataset=str(dataset)), run="none", runtime=small)
    assert {r.field for r in too_big.value.refusals} == {"model", "dataset"}
    assert "SPOTSHIFT_MAX_INPUT_UPLOAD_BYTES = 1.0 KiB" in str(too_big.value)
    assert rt.jobs.list() == [] and small.jobs.list() == [] and objects(s3, bucket) == {}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_an_unreadable_local_input_is_refused_naming_it(tmp_path, s3, bucket, tiny_lm):
    model_dir, _ = tiny_lm
    rt = ec2_runtime(tmp_path, s3, bucket)
    unreadable = tmp_path / "secret.jsonl"
    unreadable.write_text('{"text": "x"}\n')
    unreadable.chmod(0)
    try:
        with pytest.raises(InputsRefused, match="dataset .*not readable"):
            api.submit(job(model=str(model_dir), dataset=str(unreadable)), run="none", runtime=rt)
    finally:
        unreadable.chmod(0o600)
    assert rt.jobs.list() == [] and objects(s3, bucket) == {}


def test_a_local_backend_job_keeps_its_local_paths(tmp_path, s3, bucket, tiny_lm):
    model_dir, dataset = tiny_lm
    s = Settings(home=tmp_path, bucket=bucket)  # compute_backend local
    rt = Runtime(settings=s, jobs=open_job_store(s), ledger=open_ledger(s), s3=s3, market=None, backend=None)
    job_id = api.submit(job(model=str(model_dir), dataset=str(dataset), output_bucket="anywhere"), run="none",
                        runtime=rt)
    assert rt.jobs.get(job_id).request.model == str(model_dir) and objects(s3, bucket) == {}


# --- model-metadata: a refused or missing config.json ------------------------------------------------


def test_a_missing_config_that_s3_answers_403_is_named_as_missing_not_denied(moto_endpoint, s3, bucket, aws_data_grant):
    """S3 answers a missing key 403 to a role whose ListBucket grant carries an s3:prefix condition
    (as both roles' data grants do): one listing tells it apart (a proxy answering 403, named as such).
    The deployment granted models/ (setup --data), so the call check holds the read to that policy."""
    aws_data_grant(f"s3://{bucket}/models/")
    from deployments.local_aws import client
    from spotshift.hf import ModelMetadataUnavailable, model_size
    from tests.s3_missing_key_403 import s3_answering_missing_keys_with_403

    with s3_answering_missing_keys_with_403(moto_endpoint) as proxy:
        with pytest.raises(ModelMetadataUnavailable, match=f"no config.json .*s3://{bucket}/models/none/config.json"):
            model_size(f"s3://{bucket}/models/none", s3_client=client("s3", proxy.endpoint))
    assert proxy.denied_keys() == {f"{bucket}/models/none/config.json"}


# --- under IAM enforcement: setup --data, a refused model read, a whole job ---------------------------


@dataclass
class Granted:
    """A moto server with IAM enforcement after `spotshift aws setup --data` by a user holding only
    the setup policy printed with the same --data; the user's bucket holds the tiny model."""

    endpoint: str
    admin: Any
    settings: Settings  # data_prefixes as the printed export line sets them
    setup_out: str
    user_bucket: str

    def keys(self, policy: dict) -> dict[str, str]:
        """The environment of a new IAM user holding only `policy` (as moto evaluates it)."""
        from tests.moto_iam import for_moto
        from tests.test_aws_iam_enforced import user_with

        key, secret = user_with(self.admin("iam", "us-east-1"), for_moto(policy))
        return {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}

    def user(self, policy: dict) -> Any:
        """Clients of a new IAM user holding only `policy`."""
        from tests.aws_helpers import moto_clients

        keys = self.keys(policy)
        return moto_clients(self.endpoint, key=keys["AWS_ACCESS_KEY_ID"], secret=keys["AWS_SECRET_ACCESS_KEY"])

    def trainer_policy(self) -> dict:
        """The trainer role's inline policy as setup wrote it."""
        from spotshift.aws.setup import TRAINER_POLICY_NAME

        return self.admin("iam", "us-east-1").get_role_policy(RoleName=self.settings.trainer_role,
                                                              PolicyName=TRAINER_POLICY_NAME)["PolicyDocument"]


def run_aws_cli(action: str, settings: Settings, clients, *, which: str | None = None,
                data: list[str] | None = None) -> tuple[int, str]:
    from deployments.aws_cli import run_aws

    out = io.StringIO()
    args = argparse.Namespace(aws_action=action, regions=None, bucket=None, delete_bucket=False, which=which,
                              data=data)
    return run_aws(args, settings=settings, clients=clients, out=out), out.getvalue()


def printed(settings: Settings, clients, which: str, data: list[str]) -> dict:
    return json.loads(run_aws_cli("policy", settings, clients, which=which, data=data)[1])


@pytest.fixture(scope="module")
def granted(tmp_path_factory, tiny_lm):
    from deployments.local_aws import moto_server_process
    from tests.aws_helpers import moto_clients
    from tests.test_aws_iam_enforced import ADMIN_BOOTSTRAP_CALLS, user_with

    env = {"INITIAL_NO_AUTH_ACTION_COUNT": str(ADMIN_BOOTSTRAP_CALLS), "MOTO_ENABLE_AMI_VALIDATION": "true"}
    with moto_server_process(env=env) as endpoint:
        boot = moto_clients(endpoint, key="boot", secret="boot")
        key, secret = user_with(boot("iam", "us-east-1"), {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"}]})
        admin = moto_clients(endpoint, key=key, secret=secret)
        image = admin("ec2", "us-east-1").register_image(Name="spotshift data test image",
                                                         RootDeviceName="/dev/sda1")["ImageId"]
        tag = uuid.uuid4().hex[:8]
        user_bucket = f"user-data-{tag}"  # the user's own bucket, beside spotshift's
        admin("s3", "us-east-1").create_bucket(Bucket=user_bucket)
        model_dir, _ = tiny_lm
        for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
            admin("s3", "us-east-1").upload_file(str(path), user_bucket,
                                                 f"models/base/{path.relative_to(model_dir).as_posix()}")
        settings = Settings(home=tmp_path_factory.mktemp("granted"), bucket=f"spotshift-data-{tag}",
                            trainer_role=f"spotshift-trainer-{tag}", instance_profile=f"spotshift-trainer-{tag}",
                            security_group=f"spotshift-{tag}", regions=REGIONS, image_ids={"us-east-1": image},
                            aws_endpoint_url=endpoint, heartbeat_stall_seconds=90 * SPEEDUP)
        data = [f"s3://{user_bucket}/models/"]
        setup_user = Granted(endpoint, admin, settings, "", user_bucket).user(printed(settings, admin, "setup", data))
        code, out = run_aws_cli("setup", settings, setup_user, data=data)
        assert code == 0, out
        yield Granted(endpoint, admin, settings.model_copy(update={"data_prefixes": data}), out, user_bucket)


def test_setup_with_data_grants_both_roles_read_there_and_prints_the_export_line(granted):
    data = f"s3://{granted.user_bucket}/models/"
    read = {"Action": ["s3:GetObject"], "Resource": [f"arn:aws:s3:::{granted.user_bucket}/models/*"]}
    listing = {"Action": ["s3:ListBucket"], "Resource": f"arn:aws:s3:::{granted.user_bucket}",
               "Condition": {"StringLike": {"s3:prefix": ["models/*"]}}}

    def grants(policy: dict) -> list[dict]:
        return [{k: s[k] for k in ("Action", "Resource", "Condition") if k in s} for s in policy["Statement"]
                if granted.user_bucket in json.dumps(s["Resource"])]

    assert grants(granted.trainer_policy()) == [read, listing]
    runtime = json.loads(granted.setup_out.split("prints it again):\n", 1)[1].split("\n\n", 1)[0])
    assert grants(runtime) == [read, listing]
    assert f"""export SPOTSHIFT_DATA_PREFIXES='["{data}"]'""" in granted.setup_out.splitlines()
    assert any(line.split()[:3] == ["exists", "data", "prefix"] and data in line and "us-east-1" in line
               for line in granted.setup_out.splitlines()), granted.setup_out


def test_setup_refuses_a_data_prefix_it_cannot_grant_before_changing_anything(granted):
    from spotshift.aws.setup import SetupError

    admin = granted.admin
    before = granted.trainer_policy()
    with pytest.raises(SetupError, match="bucket 'no-such-bucket-.*' does not exist"):
        run_aws_cli("setup", granted.settings, admin, data=[f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x/"])
    with pytest.raises(ValueError, match="data prefix 's3://Bad_Bucket/x/'"):
        run_aws_cli("setup", granted.settings, admin, data=["s3://Bad_Bucket/x/"])
    assert granted.trainer_policy() == before


def test_setup_names_a_data_bucket_of_another_account(s3, bucket):
    """S3 answers a bucket owned by another account than ExpectedBucketOwner 403 AccessDenied; moto
    ignores ExpectedBucketOwner, so that answer is a botocore Stubber (named as such)."""
    import boto3
    from botocore.stub import Stubber

    from spotshift.aws.setup import SetupError, check_data_prefix
    from spotshift.data_prefixes import DataPrefix

    assert check_data_prefix(s3, DataPrefix(bucket, "models/"), account="123456789012").region == "us-east-1"
    stubbed = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(stubbed) as stubber:
        stubber.add_client_error("get_bucket_location", "AccessDenied", "Access Denied", 403,
                                 expected_params={"Bucket": "theirs-1", "ExpectedBucketOwner": "123456789012"})
        with pytest.raises(SetupError, match="bucket 'theirs-1' was refused: another account owns it"):
            check_data_prefix(stubbed, DataPrefix("theirs-1", "models/"), account="123456789012")


@pytest.mark.slow
@pytest.mark.xdist_group("prefect")
def test_model_metadata_of_a_refused_model_fails_once_naming_the_key_and_the_command(granted, prefect_api):
    """The orchestrator holds the runtime policy printed without --data: S3 refuses the model's
    config.json; the model-metadata task fails at its first attempt (no retry asks again)."""
    from prefect import flow

    from flows.train_job import model_needs
    from spotshift.aws.job_inputs import InputAccessDenied

    orch = granted.user(printed(granted.settings.model_copy(update={"data_prefixes": []}), granted.admin, "runtime", []))
    s3 = orch("s3", "us-east-1")
    calls: list[str] = []
    s3.meta.events.register("before-parameter-build.s3.*", lambda model, params, **_: calls.append(
        f"{model.name} {params.get('Key', params.get('Prefix'))}"))

    @flow
    def sizing(request: JobCreate) -> Any:
        return model_needs(request, s3)

    model = f"s3://{granted.user_bucket}/models/base/"
    with pytest.raises(InputAccessDenied) as denied:
        sizing(job(model=model))
    assert f"reading {model}config.json was denied" in str(denied.value)
    assert f"`spotshift aws setup --data {model}`" in str(denied.value)
    assert calls == ["GetObject models/base/config.json", "ListObjectsV2 models/base/config.json"]  # once


@pytest.mark.slow
@pytest.mark.xdist_group("prefect")
@pytest.mark.timeout(600)
def test_a_job_with_its_model_in_a_granted_prefix_trains_with_only_the_printed_policies(granted, prefect_api, tiny_lm,
                                                                                        monkeypatch):
    """Submit judges the job as EC2 would (its local dataset uploaded under the job); the job then
    trains on the local backend: the orchestrator holds only the runtime policy setup printed, the
    trainer process only the policy setup wrote into the trainer role."""
    from blocks.stores import open_market_history
    from deployments.demo_market import DemoTimeline, demo_market
    from flows.controller import run_job
    from spotshift.aws.bucket_owner import expect_bucket_owner
    from spotshift.aws.images import settings_resolver
    from spotshift.aws.launch_env import LaunchEnvironment
    from spotshift.aws.local_backend import LocalBackend
    from spotshift.aws.network import LaunchNetwork
    from spotshift.clock import VirtualClock
    from tests.aws_helpers import moto_clients

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    settings = granted.settings
    runtime_policy = json.loads(granted.setup_out.split("prints it again):\n", 1)[1].split("\n\n", 1)[0])
    orch_keys, trainer_keys = granted.keys(runtime_policy), granted.keys(granted.trainer_policy())
    orch = moto_clients(granted.endpoint, key=orch_keys["AWS_ACCESS_KEY_ID"], secret=orch_keys["AWS_SECRET_ACCESS_KEY"])
    s3 = expect_bucket_owner(orch("s3", "us-east-1"), "123456789012")
    jobs, ledger = open_job_store(settings), open_ledger(settings)
    start = datetime.now(UTC).replace(microsecond=0)
    clock = VirtualClock(start=start, speedup=SPEEDUP)
    _, dataset = tiny_lm
    model = f"s3://{granted.user_bucket}/models/base/"

    def request(**fields) -> JobCreate:
        return JobCreate.model_validate(dict(
            name="data-job", model=model, dataset=str(dataset), max_steps=30, batch_size=4, seq_len=32,
            checkpoint_every_steps=10, budget_usd=50, regions=REGIONS, instance_types=["p3.2xlarge"],
            deadline=clock() + timedelta(hours=48)) | fields, context={"now": clock()})

    submitting = Runtime(settings=settings.model_copy(update={"compute_backend": "ec2"}), jobs=jobs, ledger=ledger,
                         s3=s3, market=None, backend=None, clock=clock)
    with pytest.raises(InputsRefused, match="model 's3://.*/private/base/'"):
        api.submit(request(model=f"s3://{granted.user_bucket}/private/base/"), run="none", runtime=submitting)
    assert jobs.list() == []
    job_id = api.submit(request(), run="none", runtime=submitting)
    assert jobs.get(job_id).request.dataset == f"s3://{settings.bucket}/jobs/{job_id}/inputs/dataset/corpus.jsonl"

    market = demo_market(start, DemoTimeline(lost_minute=10_000, cheap_minute=10_000))
    backend = LocalBackend(granted.endpoint, settings.home / "instances", oracle=market, clock=clock, grace_s=15.0,
                           regions=REGIONS, credentials=orch_keys,
                           trainer_credentials=trainer_keys,
                           launch_env=LaunchEnvironment(images=settings_resolver(settings, orch), network=LaunchNetwork(
                               lambda r: orch("ec2", r), security_group=settings.security_group)))
    history = open_market_history(settings)
    history.record(market.past_observations(clock()), source="replay")
    rt = Runtime(settings=settings, jobs=jobs, ledger=ledger, s3=s3, market=market, backend=backend, clock=clock,
                 history=history, poll_seconds=0.3, min_step_seconds=0.1, image_id=None,
                 on_demand_prices={"p3.2xlarge": 3.06})
    try:
        summary = run_job(job_id, runtime=rt)
    finally:
        backend.close()
    assert summary["status"] == "succeeded" and summary["steps"] == 30, json.dumps(summary, default=str)
    final = s3.list_objects_v2(Bucket=settings.bucket, Prefix=f"jobs/{job_id}/final/")["Contents"]
    assert any(o["Key"].endswith("model.safetensors") for o in final)
