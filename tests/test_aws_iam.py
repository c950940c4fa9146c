"""The IAM policy documents (pure): the file under docs/ is the generated policy, and every
statement is scoped the way moto cannot check (resources, conditions)."""

from __future__ import annotations

import json
from pathlib import Path

from spotshift.aws.iam import orchestrator_policy, policy_actions, trainer_policy

DOC = Path(__file__).resolve().parents[1] / "docs" / "iam" / "orchestrator-policy.json"


def statement(policy: dict, sid: str) -> dict:
    return next(s for s in policy["Statement"] if s["Sid"] == sid)


def test_the_documented_policy_is_the_generated_one():
    assert json.loads(DOC.read_text()) == orchestrator_policy()
    assert len(policy_actions(orchestrator_policy())) == 44  # TagRole: setup creates the trainer role with tags


def test_terminate_only_tagged_instances_pass_only_the_trainer_role_tag_only_at_creation():
    policy = orchestrator_policy(bucket="b", trainer_role="r", account="123456789012")
    terminate = statement(policy, "TerminateOnlySpotshiftInstances")
    assert terminate["Condition"] == {"Null": {"aws:ResourceTag/spotshift:job-id": "false"}}
    assert statement(policy, "PassOnlyTheTrainerRole")["Resource"] == "arn:aws:iam::123456789012:role/r"
    assert statement(policy, "PassOnlyTheTrainerRole")["Condition"]["StringEquals"]["iam:PassedToService"] == \
        "ec2.amazonaws.com"
    assert statement(policy, "TagOnlyAtCreation")["Condition"] == {
        "StringEquals": {"ec2:CreateAction": ["RunInstances", "CreateSecurityGroup"]}}
    assert statement(policy, "LaunchTaggedInstances")["Condition"] == {
        "Null": {"aws:RequestTag/spotshift:job-id": "false"}}


def test_no_statement_allows_a_write_action_on_every_resource():
    for s in orchestrator_policy()["Statement"]:
        if s["Resource"] == "*":
            assert all(a.split(":")[1].startswith(("Describe", "Get")) for a in s["Action"]), s


def test_object_access_is_only_under_the_job_and_artifact_prefixes():
    policy = orchestrator_policy(bucket="b")
    assert statement(policy, "JobAndArtifactObjects")["Resource"] == ["arn:aws:s3:::b/jobs/*", "arn:aws:s3:::b/artifacts/*"]


def test_the_trainer_reads_one_secret_lists_only_its_prefixes_and_only_reads_artifacts():
    policy = trainer_policy(bucket="b", secret_arn="arn:aws:secretsmanager:us-east-1:1:secret:hf-AbCd")
    assert statement(policy, "HubToken") == {"Sid": "HubToken", "Effect": "Allow",
                                             "Action": ["secretsmanager:GetSecretValue"],
                                             "Resource": "arn:aws:secretsmanager:us-east-1:1:secret:hf-AbCd"}
    assert statement(policy, "ListJobPrefixes")["Condition"] == {"StringLike": {"s3:prefix": ["jobs/*", "artifacts/*"]}}
    assert statement(policy, "TrainerArtifacts")["Action"] == ["s3:GetObject"]
    assert all(s["Sid"] != "HubToken" for s in trainer_policy(bucket="b")["Statement"])


def test_setup_may_tag_the_trainer_role_it_creates_with_tags():
    """setup creates the trainer role with Tags=, and IAM authorizes a CreateRole with tags only with
    iam:TagRole on the role too (IAM User Guide, "Permissions required to tag IAM resources")."""
    setup = next(s for s in orchestrator_policy()["Statement"] if s["Sid"] == "TrainerRoleSetup")
    assert {"iam:CreateRole", "iam:TagRole"} <= set(setup["Action"])
    assert "arn:aws:iam::*:role/spotshift-trainer" in setup["Resource"]
