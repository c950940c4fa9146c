"""`spotshift aws setup | check | teardown` against the moto server: idempotent setup, a bucket of
another account refused by name, check rows (a zero quota fails its row), teardown."""

from __future__ import annotations

import argparse
import io
import json
import uuid

import pytest

from deployments.aws_cli import run_aws
from spotshift.aws.errors import SpotshiftAwsError
from spotshift.settings import Settings
from tests.aws_helpers import moto_clients, stubbed_quotas

REGIONS = ["us-east-1", "us-west-2"]


@pytest.fixture
def names():
    tag = uuid.uuid4().hex[:8]
    return {"bucket": f"spotshift-test-{tag}", "role": f"spotshift-trainer-{tag}", "group": f"spotshift-{tag}"}


def settings_for(tmp_path, names) -> Settings:
    return Settings(home=tmp_path, bucket=names["bucket"], trainer_role=names["role"], instance_profile=names["role"],
                    security_group=names["group"], regions=REGIONS, image_name_pattern="Deep Learning AMI*")


def aws(action: str, settings: Settings, clients, **extra) -> tuple[int, str]:
    out = io.StringIO()
    args = argparse.Namespace(aws_action=action, regions=None, bucket=None, delete_bucket=False, **extra)
    return run_aws(args, settings=settings, clients=clients, out=out), out.getvalue()


def resources(clients, names) -> dict:
    iam, s3 = clients("iam", "us-east-1"), clients("s3", "us-east-1")
    groups = {r: [g["GroupId"] for g in clients("ec2", r).describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [names["group"]]}])["SecurityGroups"]] for r in REGIONS}
    return {
        "role": iam.get_role(RoleName=names["role"])["Role"]["Arn"],
        "policy": iam.get_role_policy(RoleName=names["role"], PolicyName="spotshift-trainer-access")["PolicyDocument"],
        "profile_roles": [r["RoleName"] for r in iam.get_instance_profile(
            InstanceProfileName=names["role"])["InstanceProfile"]["Roles"]],
        "groups": groups,
        "block_public": s3.get_public_access_block(Bucket=names["bucket"])["PublicAccessBlockConfiguration"],
        "lifecycle": [r["ID"] for r in s3.get_bucket_lifecycle_configuration(Bucket=names["bucket"])["Rules"]],
    }


def test_setup_twice_gives_the_same_resources_and_no_error(moto_endpoint, tmp_path, names):
    clients = moto_clients(moto_endpoint)
    settings = settings_for(tmp_path, names)
    code, first_out = aws("setup", settings, clients)
    first = resources(clients, names)
    code2, second_out = aws("setup", settings, clients)
    assert (code, code2) == (0, 0)
    assert resources(clients, names) == first
    assert all(len(ids) == 1 for ids in first["groups"].values())
    assert first["profile_roles"] == [names["role"]]
    assert all(first["block_public"].values())
    assert set(first["lifecycle"]) == {"spotshift-abort-multipart", "spotshift-expire-finished-checkpoints"}
    assert f"created  s3 bucket            {names['bucket']}" in first_out
    assert f"exists   s3 bucket            {names['bucket']}" in second_out and "created" not in second_out
    policy = json.loads(second_out[second_out.index("{"):second_out.rindex("}") + 1])
    assert any(s["Sid"] == "PassOnlyTheTrainerRole" and s["Resource"].endswith(f":role/{names['role']}")
               for s in policy["Statement"])


def test_a_bucket_owned_by_another_account_is_named_in_a_clear_error(moto_endpoint, tmp_path, names):
    other = moto_clients(moto_endpoint)("s3", "us-east-1")
    other.meta.events.register("before-sign.s3.*", lambda request, **_: request.headers.__setitem__(
        "x-moto-account-id", "111111111111"))  # moto: the request comes from another account
    other.create_bucket(Bucket=names["bucket"])
    with pytest.raises(SpotshiftAwsError, match=f"bucket '{names['bucket']}' already exists and belongs to another"):
        aws("setup", settings_for(tmp_path, names), moto_clients(moto_endpoint))


def test_check_passes_after_setup_and_a_zero_quota_is_a_failed_row(moto_endpoint, tmp_path, names):
    settings = settings_for(tmp_path, names)
    assert aws("setup", settings, moto_clients(moto_endpoint))[0] == 0
    ok_code, ok_out = aws("check", settings, moto_clients(moto_endpoint, stubs={"service-quotas": stubbed_quotas({})}))
    assert ok_code == 0, ok_out
    assert "run-instances dry run" in ok_out and "would launch" in ok_out

    zero = moto_clients(moto_endpoint, stubs={"service-quotas": stubbed_quotas({"L-3819A6DF": 0})})
    code, out = aws("check", settings, zero)
    failed = [line for line in out.splitlines() if " FAIL " in line]
    assert code == 1
    assert len(failed) == 2 and all("quota G spot" in line and "L-3819A6DF" in line and ": 0 vCPUs" in line
                                    for line in failed)  # one per region
    assert "request an increase of All G and VT Spot Instance Requests (L-3819A6DF)" in out


def test_check_without_setup_fails_naming_what_to_fix(moto_endpoint, tmp_path, names):
    code, out = aws("check", settings_for(tmp_path, names),
                    moto_clients(moto_endpoint, stubs={"service-quotas": stubbed_quotas({})}))
    assert code == 1
    assert "bucket" in out and "run `spotshift aws setup`" in out
    assert f"no security group '{names['group']}'" in out


def test_teardown_removes_role_profile_and_groups_and_keeps_the_bucket(moto_endpoint, tmp_path, names):
    clients = moto_clients(moto_endpoint)
    settings = settings_for(tmp_path, names)
    aws("setup", settings, clients)
    clients("s3", "us-east-1").put_object(Bucket=names["bucket"], Key="jobs/j/final/model.safetensors", Body=b"w")
    code, out = aws("teardown", settings, clients)
    assert code == 0, out
    iam = clients("iam", "us-east-1")
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_role(RoleName=names["role"])
    assert not clients("ec2", "us-west-2").describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [names["group"]]}])["SecurityGroups"]
    assert clients("s3", "us-east-1").get_object(Bucket=names["bucket"], Key="jobs/j/final/model.safetensors")
