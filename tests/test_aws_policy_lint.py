"""parliament and cloudsplaining on the printed setup and runtime policies (the defaults and a
realistic configuration), each as its command line runs by default and in its strict mode
(parliament --include-community-auditors; cloudsplaining scan-policy-file -aR --high-priority-only,
which flags risky actions even where an ARN or a condition scopes them). Every finding left is in
ACCEPTED with the reason it stays, and docs/aws.md lists it; a new finding fails the test.

No finding is a gap in parliament's data today (no UNKNOWN_ACTION, UNKNOWN_CONDITION_FOR_ACTION or
UNKNOWN_PREFIX): a new action or key parliament does not know yet fails here too, and belongs in
ACCEPTED only with the AWS reference page that shows it exists."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest

with warnings.catch_warnings():  # parliament imports pkg_resources (setuptools<81 in the lock)
    warnings.simplefilter("ignore", UserWarning)
    from parliament import analyze_policy_string

from cloudsplaining.command.scan_policy_file import scan_policy

from spotshift.aws.iam import runtime_policy, setup_policy
from tests.test_aws_iam import REALISTIC

DOCS = Path(__file__).resolve().parents[1] / "docs" / "aws.md"
HIGH_PRIORITY = ("PrivilegeEscalation", "ResourceExposure", "DataExfiltration", "CredentialsExposure", "ServiceWildcard")
RUN_INSTANCES_STATEMENTS = ("LaunchGpuTypesWithTrainerProfile", "LaunchTaggedVolumes", "LaunchOwnedImages",
                            "LaunchIntoNetwork")
SPLIT = ("parliament checks each statement alone (duo-labs/parliament#3, open since 2019): RunInstances' resources "
         "are split over four statements, each with its own conditions, as AWS's own RunInstances examples are; "
         "together they name every resource type RunInstances requires (test_the_run_instances_statements_together_"
         "cover_every_resource_it_requires)")
PASS_AND_LAUNCH = ("PassRole and RunInstances together can start an instance with a role: PassRole names only the "
                   "trainer role and only to EC2, RunInstances requires the trainer's instance profile, a catalog GPU "
                   "type, an Amazon or account image and the job tag; the trainer role reads and writes only the "
                   "bucket's jobs/ and artifacts/ (and the granted data prefixes)")
ACCEPTED: dict[str, dict[tuple[str, ...], str]] = {
    "runtime": {
        **{("parliament", "RESOURCE_MISMATCH", sid, "ec2:RunInstances"): SPLIT for sid in RUN_INSTANCES_STATEMENTS},
        ("parliament --include-community-auditors", "PRIVILEGE_ESCALATION", "CreateEC2WithExistingIP"): PASS_AND_LAUNCH,
        ("parliament --include-community-auditors", "PERMISSIONS_MANAGEMENT_ACTIONS", "iam:passrole"): PASS_AND_LAUNCH,
        ("cloudsplaining -aR", "PrivilegeEscalation", "CreateEC2WithExistingIP"): PASS_AND_LAUNCH,
        ("cloudsplaining -aR", "ResourceExposure", "iam:PassRole"): PASS_AND_LAUNCH,
        ("cloudsplaining -aR", "DataExfiltration", "s3:GetObject"): (
            "only the bucket's jobs/ and artifacts/ and the data prefixes the user granted"),
        ("cloudsplaining -aR", "DataExfiltration", "ssm:GetParameter"): (
            "only AWS's public Deep Learning AMI parameters (/aws/service/deeplearning/*), which hold image ids"),
    },
    "setup": {
        ("parliament --include-community-auditors", "PERMISSIONS_MANAGEMENT_ACTIONS",
         "iam:addroletoinstanceprofile,iam:createinstanceprofile,iam:createrole,iam:createservicelinkedrole,"
         "iam:deleteinstanceprofile,iam:deleterole,iam:deleterolepolicy,iam:passrole,iam:putrolepolicy,"
         "iam:removerolefrominstanceprofile,s3:putbucketpublicaccessblock"): (
            "setup's purpose: the trainer role and its profile (by name), the spot service-linked role (only "
            "spot.amazonaws.com), the bucket's public-access block (setup turns it on)"),
        ("cloudsplaining -aR", "PrivilegeEscalation", "PutRolePolicy"): (
            "PutRolePolicy only on the trainer role, which only EC2 may assume; this policy launches nothing, "
            "and the runtime policy changes no role"),
        **{("cloudsplaining -aR", "ResourceExposure", action): (
            "on the trainer role and its profile only (by ARN), the spot service-linked role only, the "
            "bucket's public-access block only") for action in (
            "iam:AddRoleToInstanceProfile", "iam:CreateInstanceProfile", "iam:CreateRole", "iam:DeleteInstanceProfile",
            "iam:DeleteRole", "iam:DeleteRolePolicy", "iam:PutRolePolicy", "iam:RemoveRoleFromInstanceProfile",
            "iam:PassRole", "iam:CreateServiceLinkedRole", "s3:PutBucketPublicAccessBlock")},
    },
}
POLICIES = {
    "runtime": {"defaults": runtime_policy(), "realistic": runtime_policy(**REALISTIC)},
    "setup": {"defaults": setup_policy(),
              "realistic": setup_policy(**{k: v for k, v in REALISTIC.items() if k != "image_owners"})},
}


def statement_sids(text: str) -> dict[int, str]:
    """Line number of each statement's opening brace (json.dumps indent=2) -> its Sid."""
    lines = text.splitlines()
    return {n: re.fullmatch(r'\s*"Sid": "([^"]+)",', lines[n]).group(1)  # the line after the brace
            for n, line in enumerate(lines, 1) if line == "    {"}


def parliament_findings(policy: dict, *, community: bool) -> set[tuple[str, ...]]:
    """(mode, issue, statement Sid or what the finding names[, actions]) of each finding; with the
    community auditors, only those the default run does not report."""
    text = json.dumps(policy, indent=2)
    sids = statement_sids(text)
    found = set()
    for f in analyze_policy_string(text, include_community_auditors=community).findings:
        if f.issue == "RESOURCE_MISMATCH":
            found.add((f.issue, sids[f.location["line"]], ",".join(sorted({d["action"] for d in f.detail}))))
        elif f.issue == "PRIVILEGE_ESCALATION":
            found.add((f.issue, f.location["type"]))
        elif f.issue == "PERMISSIONS_MANAGEMENT_ACTIONS":
            found.add((f.issue, ",".join(sorted(f.location["actions"]))))
        else:
            found.add((f.issue, json.dumps(f.detail, default=str), json.dumps(f.location, default=str)))
    if community:
        found -= {f[1:] for f in parliament_findings(policy, community=False)}
    mode = "parliament --include-community-auditors" if community else "parliament"
    return {(mode, *f) for f in found}


def cloudsplaining_findings(policy: dict, *, strict: bool) -> set[tuple[str, ...]]:
    """(mode, category, escalation method or action) of each finding; the strict mode reports only
    the high-priority categories, as --high-priority-only does."""
    results = scan_policy(policy, flag_conditional_statements=strict, flag_resource_arn_statements=strict)
    mode = "cloudsplaining -aR" if strict else "cloudsplaining"
    found = set()
    for category, result in results.items():
        if not isinstance(result, dict) or (strict and category not in HIGH_PRIORITY):
            continue
        for finding in result.get("findings", []):
            found.add((mode, category, finding["type"] if isinstance(finding, dict) else finding))
    return found


def all_findings(policy: dict) -> set[tuple[str, ...]]:
    return (parliament_findings(policy, community=False) | parliament_findings(policy, community=True)
            | cloudsplaining_findings(policy, strict=False) | cloudsplaining_findings(policy, strict=True))


@pytest.mark.parametrize("name, config", [(n, c) for n in POLICIES for c in ("defaults", "realistic")])
def test_every_linter_finding_is_an_accepted_one_with_its_reason(name, config):
    assert all_findings(POLICIES[name][config]) == set(ACCEPTED[name])


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_the_default_modes_find_nothing_but_parliaments_split_statement_false_positive(name):
    """cloudsplaining scan-policy-file as run by default: nothing on either policy; parliament as run
    by default: nothing on the setup policy, only the split RunInstances statements on the runtime one."""
    policy = POLICIES[name]["realistic"]
    assert cloudsplaining_findings(policy, strict=False) == set()
    default = parliament_findings(policy, community=False)
    assert {f[2] for f in default} == (set(RUN_INSTANCES_STATEMENTS) if name == "runtime" else set())
    assert all(ACCEPTED[name][f] == SPLIT for f in default)


def test_the_run_instances_statements_together_cover_every_resource_it_requires():
    """The split is parliament's only default finding: with the four statements merged into one
    (conditions dropped, for this check only) parliament finds every required resource."""
    policy = runtime_policy(**REALISTIC)
    split = [s for s in policy["Statement"] if s["Sid"] in RUN_INSTANCES_STATEMENTS]
    assert [s["Action"] for s in split] == [["ec2:RunInstances"]] * 4
    merged = {"Sid": "Merged", "Effect": "Allow", "Action": ["ec2:RunInstances"],
              "Resource": [r for s in split for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])]}
    rest = [s for s in policy["Statement"] if s not in split]
    found = parliament_findings({"Version": "2012-10-17", "Statement": [*rest, merged]}, community=False)
    assert found == set()


def test_docs_list_every_accepted_finding():
    """docs/aws.md's findings table names each finding's linter, issue and subject."""
    section = DOCS.read_text().split("### What the linters say", 1)[1].split("\n## ", 1)[0]
    for name, accepted in ACCEPTED.items():
        for mode, issue, subject, *_ in accepted:
            for token in (mode, issue, *subject.split(",")):
                assert token in section, (name, token)
