"""The IAM policy documents (pure): the files under docs/iam/ are the generated defaults, the runtime
policy holds no IAM write and carries the conditions that scope it (which moto does not evaluate:
these assertions are the only check of them), it fits a customer-managed policy, and the user's
data prefixes are granted read-only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spotshift.aws.iam import (
    MANAGED_POLICY_MAX_CHARS,
    gpu_instance_type_patterns,
    policy_actions,
    policy_size,
    runtime_policy,
    secret_prefix_error,
    setup_policy,
    trainer_policy,
)
from spotshift.catalog import INSTANCE_TYPES
from spotshift.data_prefixes import DataPrefix, parse_data_prefix, parse_data_prefixes

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = "123456789012"
REALISTIC = dict(bucket=f"spotshift-{ACCOUNT}-us-east-1", trainer_role="spotshift-trainer",
                 instance_profile="spotshift-trainer", account=ACCOUNT, image_owners=["amazon", "self", "111122223333"],
                 data_prefixes=["s3://my-data-bucket/models/llama-3-8b/", "s3://corp-datasets-eu-west-1/text/2026/"])


def statement(policy: dict, sid: str) -> dict:
    return next(s for s in policy["Statement"] if s["Sid"] == sid)


def statements_with(policy: dict, action: str) -> list[dict]:
    return [s for s in policy["Statement"] if action in s["Action"]]


@pytest.mark.parametrize("name", ["setup", "runtime"])
def test_the_documented_policies_are_the_generated_defaults_and_the_command_regenerates_them(name):
    """docs/iam/<name>-policy.json is `python -m spotshift.aws.iam <name>`'s output, byte for byte."""
    printed = subprocess.run([sys.executable, "-m", "spotshift.aws.iam", name], capture_output=True, text=True,
                             check=True, cwd=ROOT).stdout
    assert (ROOT / "docs" / "iam" / f"{name}-policy.json").read_text() == printed
    assert json.loads(printed) == {"setup": setup_policy, "runtime": runtime_policy}[name]()
    assert not (ROOT / "docs" / "iam" / "orchestrator-policy.json").exists()


def test_the_runtime_policy_creates_and_changes_no_iam_entity_secret_or_bucket():
    actions = policy_actions(runtime_policy(**REALISTIC))
    iam = [a for a in actions if a.startswith("iam:")]
    assert iam == ["iam:GetInstanceProfile", "iam:PassRole"]
    assert not [a for a in actions if a.startswith("secretsmanager:")]
    assert not [a for a in actions if a.startswith("s3:") and "Bucket" in a and not a.startswith(("s3:GetBucket", "s3:ListBucket"))]
    assert "s3:DeleteBucket" not in actions and "s3:CreateBucket" not in actions


def test_the_setup_policy_holds_what_setup_and_teardown_change_and_nothing_that_launches():
    actions = set(policy_actions(setup_policy(**{k: v for k, v in REALISTIC.items() if k != "image_owners"})))
    assert {"iam:CreateRole", "iam:TagRole", "iam:PutRolePolicy", "iam:AddRoleToInstanceProfile", "iam:PassRole",
            "iam:CreateServiceLinkedRole", "s3:CreateBucket", "s3:DeleteBucket", "ec2:CreateSecurityGroup",
            "ec2:DeleteSecurityGroup", "secretsmanager:DescribeSecret"} <= actions
    assert not {"ec2:RunInstances", "ec2:TerminateInstances", "s3:GetObject", "s3:PutObject"} & actions


def test_run_instances_only_of_catalog_gpu_types_with_the_trainer_profile_and_a_job_tag():
    policy = runtime_policy(**REALISTIC)
    launch = statement(policy, "LaunchGpuTypesWithTrainerProfile")
    assert launch["Resource"] == f"arn:aws:ec2:*:{ACCOUNT}:instance/*"
    assert launch["Condition"] == {
        "Null": {"aws:RequestTag/spotshift:job-id": "false"},
        "StringLike": {"ec2:InstanceType": gpu_instance_type_patterns()},
        "ArnEquals": {"ec2:InstanceProfile": f"arn:aws:iam::{ACCOUNT}:instance-profile/spotshift-trainer"}}
    families = {t.family for t in INSTANCE_TYPES.values()}
    assert gpu_instance_type_patterns() == sorted(f"{f}.*" for f in families)
    assert "p5.*" in gpu_instance_type_patterns() and "t3.*" not in gpu_instance_type_patterns()
    # every resource RunInstances creates or uses is in exactly one statement, each with its own scope
    resources = [r for s in statements_with(policy, "ec2:RunInstances")
                 for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])]
    assert len(resources) == len(set(resources))
    assert statement(policy, "LaunchTaggedVolumes")["Condition"] == {"Null": {"aws:RequestTag/spotshift:job-id": "false"}}
    assert statement(policy, "LaunchIntoNetwork").get("Condition") is None  # subnets, groups, NICs: EC2 checks the VPC


def test_images_only_from_amazon_the_account_or_the_named_owners():
    images = statement(runtime_policy(**REALISTIC), "LaunchOwnedImages")
    assert images["Resource"] == "arn:aws:ec2:*::image/*"
    assert images["Condition"] == {"StringEquals": {"ec2:Owner": sorted(["amazon", ACCOUNT, "111122223333"])}}
    # without a known account IAM fills in the caller's own
    assert statement(runtime_policy(), "LaunchOwnedImages")["Condition"] == {
        "StringEquals": {"ec2:Owner": ["${aws:PrincipalAccount}", "amazon"]}}


def test_without_an_account_the_profile_condition_matches_the_profile_name_in_any_account():
    launch = statement(runtime_policy(instance_profile="my-profile"), "LaunchGpuTypesWithTrainerProfile")
    assert launch["Condition"]["ArnLike"] == {"ec2:InstanceProfile": "arn:aws:iam::*:instance-profile/my-profile"}


def test_terminate_only_tagged_instances_pass_only_the_trainer_role_to_ec2_tag_only_at_launch():
    policy = runtime_policy(bucket="b", trainer_role="r", account=ACCOUNT)
    terminate = statement(policy, "TerminateOnlyJobInstances")
    assert terminate["Action"] == ["ec2:TerminateInstances"]
    assert terminate["Condition"] == {"Null": {"aws:ResourceTag/spotshift:job-id": "false"}}
    passing = statements_with(policy, "iam:PassRole")
    assert passing == [statement(policy, "PassOnlyTrainerRoleToEc2")]
    assert passing[0]["Resource"] == f"arn:aws:iam::{ACCOUNT}:role/r"
    assert passing[0]["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    assert statements_with(policy, "ec2:CreateTags") == [statement(policy, "TagOnlyAtLaunch")]
    assert statement(policy, "TagOnlyAtLaunch")["Condition"] == {"StringEquals": {"ec2:CreateAction": "RunInstances"}}


def test_no_statement_allows_a_write_action_on_every_resource():
    for policy in (runtime_policy(), setup_policy()):
        for s in policy["Statement"]:
            if s["Resource"] == "*":
                assert all(a.split(":")[1].startswith(("Describe", "Get")) for a in s["Action"]), s


def test_object_access_only_under_the_job_and_artifact_prefixes_and_deletes_only_jobs():
    policy = runtime_policy(bucket="b")
    assert statement(policy, "JobObjects")["Resource"] == "arn:aws:s3:::b/jobs/*"
    assert "s3:DeleteObject" in statement(policy, "JobObjects")["Action"]
    assert statement(policy, "TrainerArtifacts") == {
        "Sid": "TrainerArtifacts", "Effect": "Allow", "Resource": "arn:aws:s3:::b/artifacts/*",
        "Action": ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"]}


def test_the_runtime_policy_fits_a_customer_managed_policy():
    """IAM counts a managed policy's characters without whitespace against 6,144."""
    for kwargs in ({}, REALISTIC):
        assert policy_size(runtime_policy(**kwargs)) <= MANAGED_POLICY_MAX_CHARS, kwargs
    assert policy_size(setup_policy()) <= MANAGED_POLICY_MAX_CHARS
    assert policy_size({"a": ["b", "c"]}) == len('{"a":["b","c"]}')


def test_data_prefixes_are_read_only_in_the_runtime_and_trainer_policies():
    for policy in (runtime_policy(**REALISTIC), trainer_policy(bucket="b", data_prefixes=REALISTIC["data_prefixes"])):
        assert statement(policy, "ReadData") == {
            "Sid": "ReadData", "Effect": "Allow", "Action": ["s3:GetObject"],
            "Resource": ["arn:aws:s3:::my-data-bucket/models/llama-3-8b/*",
                         "arn:aws:s3:::corp-datasets-eu-west-1/text/2026/*"]}
        assert statement(policy, "ListData1") == {
            "Sid": "ListData1", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": "arn:aws:s3:::my-data-bucket",
            "Condition": {"StringLike": {"s3:prefix": ["models/llama-3-8b/*"]}}}
        assert statement(policy, "ListData2")["Condition"] == {"StringLike": {"s3:prefix": ["text/2026/*"]}}
    one_bucket = runtime_policy(data_prefixes=["s3://data1/a/", "s3://data1/b/"])
    assert statement(one_bucket, "ListData")["Condition"] == {"StringLike": {"s3:prefix": ["a/*", "b/*"]}}
    assert not [s for s in runtime_policy()["Statement"] if "Data" in s["Sid"]]


@pytest.mark.parametrize("value, message", [
    ("my-bucket/models/", "is not an S3 URI"),
    ("s3://My_Bucket/models/", "'My_Bucket' is not a valid S3 bucket name"),
    ("s3://ab/x", "'ab' is not a valid S3 bucket name"),
    ("s3://my-bucket/models/*", "may not contain"),
    ("s3://my-bucket/${aws:username}/", "may not contain"),
])
def test_a_bad_data_prefix_is_refused_naming_it_before_any_policy_is_built(value, message):
    with pytest.raises(ValueError, match=message) as refused:
        runtime_policy(data_prefixes=[value])
    assert repr(value) in str(refused.value) and "s3://BUCKET/PREFIX" in str(refused.value)
    with pytest.raises(ValueError, match=message):
        setup_policy(data_prefixes=[value])
    with pytest.raises(ValueError, match=message):
        trainer_policy(bucket="b", data_prefixes=[value])


def test_data_prefixes_parse_dedupe_and_cover_keys_as_s3_prefixes():
    assert parse_data_prefix("s3://my-bucket") == DataPrefix("my-bucket", "")
    assert parse_data_prefixes(["s3://b1b/x/", "s3://b1b/x/", "s3://b2b/"]) == (DataPrefix("b1b", "x/"), DataPrefix("b2b", ""))
    models = parse_data_prefix("s3://my-bucket/models/")
    assert models.covers("s3://my-bucket/models/base/config.json")
    assert not models.covers("s3://my-bucket/modelsx/a") and not models.covers("s3://other/models/a")


def test_the_trainer_reads_one_secret_lists_only_its_prefixes_and_only_reads_artifacts():
    policy = trainer_policy(bucket="b", secret_arn="arn:aws:secretsmanager:us-east-1:1:secret:spotshift/hf-AbCd")
    assert statement(policy, "HubToken") == {"Sid": "HubToken", "Effect": "Allow",
                                             "Action": ["secretsmanager:GetSecretValue"],
                                             "Resource": "arn:aws:secretsmanager:us-east-1:1:secret:spotshift/hf-AbCd"}
    assert statement(policy, "ListJobPrefixes")["Condition"] == {"StringLike": {"s3:prefix": ["jobs/*", "artifacts/*"]}}
    assert statement(policy, "TrainerArtifacts")["Action"] == ["s3:GetObject"]
    assert all(s["Sid"] != "HubToken" for s in trainer_policy(bucket="b")["Statement"])


def test_secrets_only_under_the_prefix():
    setup = statement(setup_policy(account=ACCOUNT), "HubTokenSecretLookup")
    assert setup == {"Sid": "HubTokenSecretLookup", "Effect": "Allow", "Action": ["secretsmanager:DescribeSecret"],
                     "Resource": f"arn:aws:secretsmanager:*:{ACCOUNT}:secret:spotshift/*"}
    for inside in (None, "spotshift/hf-token", "arn:aws:secretsmanager:us-east-1:1:secret:spotshift/hf-token-AbCdEf"):
        assert secret_prefix_error(inside) is None
    for outside in ("hf-token", "spotshift/", "spotshift-hf", "arn:aws:secretsmanager:us-east-1:1:secret:hf-AbCdEf"):
        assert "outside the prefix 'spotshift/'" in secret_prefix_error(outside)
        assert "SPOTSHIFT_HUB_TOKEN_SECRET" in secret_prefix_error(outside)


def test_setup_may_tag_the_trainer_role_it_creates_and_pass_it_to_its_profile():
    """setup creates the trainer role with Tags=, which IAM authorizes only with iam:TagRole on the
    role too (IAM User Guide, "Permissions required to tag IAM resources"); AddRoleToInstanceProfile
    needs iam:PassRole on the role (IAM API Reference, AddRoleToInstanceProfile)."""
    policy = setup_policy()
    role = statement(policy, "TrainerRoleAndProfile")
    assert {"iam:CreateRole", "iam:TagRole", "iam:AddRoleToInstanceProfile"} <= set(role["Action"])
    assert role["Resource"] == ["arn:aws:iam::*:role/spotshift-trainer", "arn:aws:iam::*:instance-profile/spotshift-trainer"]
    passing = statement(policy, "PutTheTrainerRoleInItsProfile")
    assert passing["Resource"] == "arn:aws:iam::*:role/spotshift-trainer"
    assert passing["Condition"] == {"StringEqualsIfExists": {"iam:PassedToService": "ec2.amazonaws.com"}}


def test_teardown_deletes_only_managed_security_groups_and_empties_only_its_bucket():
    policy = setup_policy(bucket="b")
    assert statement(policy, "DeleteOnlyManagedSecurityGroups")["Condition"] == {
        "StringEquals": {"aws:ResourceTag/spotshift:managed": "true"}}
    assert statement(policy, "EmptyTheBucketAtTeardown")["Resource"] == "arn:aws:s3:::b/*"
    assert statement(policy, "TagSecurityGroupAtCreation")["Condition"] == {
        "StringEquals": {"ec2:CreateAction": "CreateSecurityGroup"}}
