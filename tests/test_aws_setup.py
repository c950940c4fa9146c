"""`spotshift aws setup | check | teardown` against the moto server: idempotent setup, a bucket of
another account refused by name, check rows (a zero quota is named with how to raise it; the check
fails on quotas only when no GPU family is usable anywhere), teardown. Service Quotas: Stubber."""

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
    assert f"created      s3 bucket            {names['bucket']}  (us-east-1)" in first_out
    assert f"unchanged    s3 bucket            {names['bucket']}  (us-east-1)" in second_out
    assert "unchanged    iam role policy      spotshift-trainer-access" in second_out
    assert "created" not in second_out and "updated" not in second_out
    policy = json.loads(second_out[second_out.index("{"):second_out.rindex("}") + 1])  # the runtime policy
    assert any(s["Sid"] == "PassOnlyTrainerRoleToEc2" and s["Resource"].endswith(f":role/{names['role']}")
               for s in policy["Statement"])
    assert not [a for s in policy["Statement"] for a in s["Action"] if a.startswith(("iam:Create", "iam:Put"))]


def test_a_hub_token_secret_outside_the_prefix_is_refused_before_anything_is_made(moto_endpoint, tmp_path, names):
    clients = moto_clients(moto_endpoint)
    settings = settings_for(tmp_path, names).model_copy(update={"hub_token_secret": "hf-token"})
    for action in ("setup", "check"):
        with pytest.raises(ValueError, match="SPOTSHIFT_HUB_TOKEN_SECRET='hf-token' is outside the prefix 'spotshift/'"):
            aws(action, settings, clients)
    buckets = [b["Name"] for b in clients("s3", "us-east-1").list_buckets()["Buckets"]]
    assert names["bucket"] not in buckets
    with pytest.raises(Exception, match="NoSuchEntity"):
        clients("iam", "us-east-1").get_role(RoleName=names["role"])


def test_a_bucket_owned_by_another_account_is_named_in_a_clear_error(moto_endpoint, tmp_path, names):
    other = moto_clients(moto_endpoint)("s3", "us-east-1")
    other.meta.events.register("before-sign.s3.*", lambda request, **_: request.headers.__setitem__(
        "x-moto-account-id", "111111111111"))  # moto: the request comes from another account
    other.create_bucket(Bucket=names["bucket"])
    with pytest.raises(SpotshiftAwsError, match=f"bucket '{names['bucket']}' already exists and belongs to another"):
        aws("setup", settings_for(tmp_path, names), moto_clients(moto_endpoint))


P_CODES = ("L-417A185B", "L-7212CCBC")
ALL_GPU_CODES = ("L-DB2E81BA", "L-3819A6DF") + P_CODES


def test_check_passes_after_setup_and_a_zero_quota_is_named_with_its_fix(moto_endpoint, tmp_path, names):
    settings = settings_for(tmp_path, names)
    assert aws("setup", settings, moto_clients(moto_endpoint))[0] == 0
    ok_code, ok_out = aws("check", settings, moto_clients(moto_endpoint, stubs={"service-quotas": stubbed_quotas({})}))
    assert ok_code == 0, ok_out
    assert "run-instances dry run" in ok_out and "would launch" in ok_out

    zero = moto_clients(moto_endpoint, stubs={"service-quotas": stubbed_quotas({"L-3819A6DF": 0})})
    code, out = aws("check", settings, zero)
    assert code == 0, out  # G on-demand and P still launch
    rows = [line for line in out.splitlines() if " ZERO " in line and line.startswith(tuple(REGIONS))]
    assert len(rows) == 2 and all("quota G spot" in line and "L-3819A6DF" in line and ": 0 vCPUs" in line
                                  for line in rows)  # one per region
    assert "request an increase of All G and VT Spot Instance Requests (L-3819A6DF)" in out
    assert " FAIL " not in out


def test_a_new_account_with_only_g_quota_passes_and_is_told_which_families_are_usable(moto_endpoint, tmp_path,
                                                                                        names):
    settings = settings_for(tmp_path, names)
    assert aws("setup", settings, moto_clients(moto_endpoint))[0] == 0
    new_account = stubbed_quotas({"L-DB2E81BA": 8, "L-3819A6DF": 8}, defaults=dict.fromkeys(P_CODES, 0.0))
    code, out = aws("check", settings, moto_clients(moto_endpoint, stubs={"service-quotas": new_account}))
    assert code == 0, out
    assert "all checks passed" in out
    for region in REGIONS:
        assert (f"{region}: usable: G on-demand 8 vCPUs, G spot 8 vCPUs; quota 0: P on-demand (L-417A185B), "
                f"P spot (L-7212CCBC)") in out
        assert (f"aws service-quotas request-service-quota-increase --region {region} --service-code ec2 "
                "--quota-code L-7212CCBC") in out
    assert "L-7212CCBC): 0 vCPUs (AWS default)" in out  # read through GetAWSDefaultServiceQuota


def test_check_fails_when_no_gpu_family_is_usable_in_any_region_naming_each_quota(moto_endpoint, tmp_path, names):
    settings = settings_for(tmp_path, names)
    assert aws("setup", settings, moto_clients(moto_endpoint))[0] == 0
    nothing = stubbed_quotas({}, defaults=dict.fromkeys(ALL_GPU_CODES, 0.0))
    code, out = aws("check", settings, moto_clients(moto_endpoint, stubs={"service-quotas": nothing}))
    assert code == 1, out
    verdict = out[out.index("check(s) failed"):]
    assert "no GPU family is usable in any region" in verdict and all(c in verdict for c in ALL_GPU_CODES)
    assert all(f"--region {region} --service-code ec2 --quota-code {c}" in out  # each ZERO row's fix
               for region in REGIONS for c in ALL_GPU_CODES)
    assert all(f"{region}: no GPU family usable" in out for region in REGIONS)


def test_unreadable_quotas_are_unknown_and_do_not_fail_the_check(moto_endpoint, tmp_path, names):
    settings = settings_for(tmp_path, names)
    assert aws("setup", settings, moto_clients(moto_endpoint))[0] == 0
    denied = stubbed_quotas({}, errors=dict.fromkeys(ALL_GPU_CODES, "AccessDeniedException"))
    code, out = aws("check", settings, moto_clients(moto_endpoint, stubs={"service-quotas": denied}))
    assert code == 0, out
    unknown = [line for line in out.splitlines() if " UNKNOWN " in line and line.startswith(tuple(REGIONS))]
    assert len(unknown) == 8 and all("unknown (AccessDeniedException on GetServiceQuota" in line for line in unknown)
    assert "allow servicequotas:GetServiceQuota" in out
    assert "us-east-1: usable: G on-demand quota unknown, G spot quota unknown, P on-demand quota unknown" in out


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
