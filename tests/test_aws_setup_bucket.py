"""`spotshift aws setup` on a bucket its owner already configured, `setup --dry-run`, and `teardown
--delete-bucket`, against the moto server: the owner's lifecycle rules and public access block kept
(spotshift's merged by rule ID, the block made stricter), "unchanged" when nothing changes, a dry run
that changes nothing (the account's state compared before and after), the creation tag that alone
lets teardown delete a bucket, versioned buckets emptied, and a key under a legal hold (object lock,
a real moto refusal) named while the bucket stays. S3 refusing a merged rule set is the one error
moto never produces: a botocore before-call handler answers it, named as such."""

from __future__ import annotations

import argparse
import io
import uuid

import pytest
from botocore.awsrequest import AWSResponse

from deployments.aws_cli import run_aws
from spotshift.settings import Settings
from tests.aws_helpers import moto_clients

REGION = "us-east-1"
OWNER_RULES = [  # an owner's own rules, in S3's spelling (a Filter, and a legacy top-level Prefix)
    {"ID": "expire-logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 7}},
    {"ID": "old-tmp", "Status": "Enabled", "Prefix": "tmp/", "Expiration": {"Days": 1}},
]
OWNER_TAGS = [{"Key": "team", "Value": "ml"}]


@pytest.fixture
def names():
    tag = uuid.uuid4().hex[:8]
    return {"bucket": f"spotshift-owned-{tag}", "role": f"spotshift-trainer-{tag}", "group": f"spotshift-{tag}"}


def settings_for(tmp_path, names, **overrides) -> Settings:
    return Settings(**({"home": tmp_path, "bucket": names["bucket"], "trainer_role": names["role"],
                        "instance_profile": names["role"], "security_group": names["group"], "regions": [REGION]}
                       | overrides))


def aws(action: str, settings: Settings, clients, *, dry_run: bool = False, delete_bucket: bool = False):
    out = io.StringIO()
    args = argparse.Namespace(aws_action=action, regions=None, bucket=None, data=None, dry_run=dry_run,
                              delete_bucket=delete_bucket)
    return run_aws(args, settings=settings, clients=clients, out=out), out.getvalue()


def owners_bucket(s3, bucket: str, *, block: dict | None = None, rules: list | None = None) -> None:
    """A bucket its owner made and configured before spotshift came."""
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": OWNER_TAGS})
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules or OWNER_RULES})
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=block or {
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": False, "RestrictPublicBuckets": False})
    s3.put_object(Bucket=bucket, Key="logs/app.log", Body=b"the owner's")


def answer_or_none(call, **kwargs):
    try:
        answer = call(**kwargs)
    except Exception as exc:  # the NoSuch... of a configuration the bucket does not have
        return type(exc).__name__ if "NoSuch" in str(exc) else repr(exc)
    answer.pop("ResponseMetadata", None)
    return answer


def account_state(clients, names) -> dict:
    """What setup could change, read with admin credentials."""
    s3, iam, ec2 = clients("s3", REGION), clients("iam", REGION), clients("ec2", REGION)
    bucket = names["bucket"]
    exists = bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    return {
        "bucket": exists and {
            "lifecycle": answer_or_none(s3.get_bucket_lifecycle_configuration, Bucket=bucket),
            "block": answer_or_none(s3.get_public_access_block, Bucket=bucket),
            "tags": answer_or_none(s3.get_bucket_tagging, Bucket=bucket),
            "objects": [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]},
        "role": answer_or_none(iam.get_role, RoleName=names["role"]) and
                answer_or_none(iam.get_role_policy, RoleName=names["role"], PolicyName="spotshift-trainer-access"),
        "profile": answer_or_none(iam.get_instance_profile, InstanceProfileName=names["role"]),
        "groups": [g["GroupId"] for g in ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": [names["group"]]}])["SecurityGroups"]],
    }


def lines_of(out: str, start: str) -> list[str]:
    """The step line starting with `start` and the indented lines under it."""
    lines = out.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith(start))
    under = []
    for line in lines[i + 1:]:
        if not line.startswith(" " * 13):
            break
        under.append(line.strip())
    return [lines[i], *under]


# ---- setup on an existing bucket ----

def test_setup_keeps_the_owners_rules_tags_and_block_adds_spotshifts_and_is_unchanged_the_second_time(
        moto_endpoint, tmp_path, names):
    clients = moto_clients(moto_endpoint)
    s3 = clients("s3", REGION)
    owners_bucket(s3, names["bucket"])
    settings = settings_for(tmp_path, names)

    code, out = aws("setup", settings, clients)
    assert code == 0, out
    step = lines_of(out, "updated      s3 bucket")
    assert step[1:] == ["set BlockPublicPolicy=true", "set RestrictPublicBuckets=true",
                        "added lifecycle rule spotshift-abort-multipart (abort uploads after 1 day on every object)",
                        "added lifecycle rule spotshift-expire-finished-checkpoints (expire after 30 days on tag "
                        "spotshift:expire=true)"]
    rules = s3.get_bucket_lifecycle_configuration(Bucket=names["bucket"])["Rules"]
    assert rules[:2] == OWNER_RULES  # as the owner wrote them, in their order
    assert [r["ID"] for r in rules[2:]] == ["spotshift-abort-multipart", "spotshift-expire-finished-checkpoints"]
    assert all(s3.get_public_access_block(Bucket=names["bucket"])["PublicAccessBlockConfiguration"].values())
    assert s3.get_bucket_tagging(Bucket=names["bucket"])["TagSet"] == OWNER_TAGS  # not marked as setup's

    code, again = aws("setup", settings, clients)
    assert code == 0, again
    assert lines_of(again, "unchanged    s3 bucket") == [
        f"unchanged    s3 bucket            {names['bucket']}  (us-east-1)"]


def test_a_rule_with_spotshifts_id_is_replaced_and_the_owners_expiring_rule_is_kept_and_named(
        moto_endpoint, tmp_path, names):
    clients = moto_clients(moto_endpoint)
    s3 = clients("s3", REGION)
    expire_all = {"ID": "expire-everything", "Status": "Enabled", "Filter": {}, "Expiration": {"Days": 14}}
    stale = {"ID": "spotshift-expire-finished-checkpoints", "Status": "Enabled",
             "Filter": {"Tag": {"Key": "spotshift:expire", "Value": "true"}}, "Expiration": {"Days": 90}}
    owners_bucket(s3, names["bucket"], rules=[stale, expire_all], block=dict.fromkeys(
        ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True))

    code, out = aws("setup", settings_for(tmp_path, names, checkpoint_expire_days=10), clients)
    assert code == 0, out
    step = lines_of(out, "updated      s3 bucket")
    assert step[1] == ("replaced lifecycle rule spotshift-expire-finished-checkpoints (expire after 90 days on tag "
                       "spotshift:expire=true -> expire after 10 days on tag spotshift:expire=true)")
    assert step[2].startswith("added lifecycle rule spotshift-abort-multipart")
    assert step[3].startswith("note: the bucket's lifecycle rule 'expire-everything' (expire after 14 days on every "
                              "object) applies to spotshift's jobs/ and artifacts/ and expires them")
    assert not any("BlockPublic" in line for line in step)  # already on: not written
    rules = s3.get_bucket_lifecycle_configuration(Bucket=names["bucket"])["Rules"]
    assert [(r["ID"], r["Expiration"].get("Days") if "Expiration" in r else None) for r in rules] == [
        ("spotshift-expire-finished-checkpoints", 10), ("expire-everything", 14), ("spotshift-abort-multipart", None)]


def test_the_lifecycle_put_carries_the_buckets_transition_default_minimum_object_size(moto_endpoint, tmp_path, names):
    """A recorded-call check (moto keeps no TransitionDefaultMinimumObjectSize of its own: it answers
    the default): the merged rules are written with the value the GET answered, never left out
    (which would reset an owner's setting to S3's default)."""
    clients = moto_clients(moto_endpoint)
    s3 = clients("s3", REGION)
    owners_bucket(s3, names["bucket"])
    answered = s3.get_bucket_lifecycle_configuration(Bucket=names["bucket"])["TransitionDefaultMinimumObjectSize"]
    puts = []
    s3.meta.events.register("before-call.s3.PutBucketLifecycleConfiguration",
                            lambda params, **_: puts.append(params.get("headers", {})))
    assert aws("setup", settings_for(tmp_path, names), clients)[0] == 0
    assert [p.get("x-amz-transition-default-minimum-object-size") for p in puts] == [answered]


def s3_refusing_lifecycle(clients, code: str = "MalformedXML"):
    """Clients whose S3 answers PutBucketLifecycleConfiguration with `code`, as S3 answers a rule set
    it does not validate (an error path moto never takes: it stores what it parses); a botocore
    before-call handler in front of the moto client, every other call reaches moto."""
    def refuse(**_):
        return (AWSResponse("https://s3.amazonaws.com", 400, {}, None),
                {"Error": {"Code": code, "Message": "The XML you provided was not well-formed or did not validate "
                                                    "against our published schema"},
                 "ResponseMetadata": {"HTTPStatusCode": 400}})
    clients("s3", REGION).meta.events.register("before-call.s3.PutBucketLifecycleConfiguration", refuse)
    return clients


def test_a_merged_rule_set_s3_refuses_leaves_the_owners_rules_and_fails_setup_naming_why(
        moto_endpoint, tmp_path, names):
    admin = moto_clients(moto_endpoint)
    owners_bucket(admin("s3", REGION), names["bucket"])
    code, out = aws("setup", settings_for(tmp_path, names), s3_refusing_lifecycle(moto_clients(moto_endpoint)))
    assert code == 1, out
    step = lines_of(out, "updated      s3 bucket")
    assert step[1:3] == ["set BlockPublicPolicy=true", "set RestrictPublicBuckets=true"]  # that part was written
    problem = step[3]
    assert problem.startswith("PROBLEM: S3 refused spotshift's lifecycle rules beside the bucket's own (MalformedXML: "
                              "The XML you provided")
    assert "the bucket's lifecycle is unchanged and spotshift's rules were not added; rule(s) 'old-tmp' use the " \
           "deprecated top-level Prefix" in problem
    assert admin("s3", REGION).get_bucket_lifecycle_configuration(Bucket=names["bucket"])["Rules"] == OWNER_RULES
    assert "security group" in out  # the other steps ran


# ---- setup --dry-run ----

def test_dry_run_on_a_new_account_says_what_it_would_create_and_creates_nothing(moto_endpoint, tmp_path, names):
    clients = moto_clients(moto_endpoint)
    before = account_state(clients, names)
    code, out = aws("setup", settings_for(tmp_path, names), clients, dry_run=True)
    assert code == 0, out
    assert account_state(clients, names) == before and before["bucket"] is False and not before["groups"]
    assert out.startswith("dry run: nothing was changed")
    assert lines_of(out, "would create s3 bucket")[1:] == [
        f"would create bucket {names['bucket']} in us-east-1", "would tag it spotshift:created-by=setup",
        "would set BlockPublicAcls=true", "would set IgnorePublicAcls=true", "would set BlockPublicPolicy=true",
        "would set RestrictPublicBuckets=true",
        "would add lifecycle rule spotshift-abort-multipart (abort uploads after 1 day on every object)",
        "would add lifecycle rule spotshift-expire-finished-checkpoints (expire after 30 days on tag "
        "spotshift:expire=true)"]
    assert lines_of(out, "would create iam role")[1] == f"would create role {names['role']} (EC2 may assume it)"
    assert lines_of(out, "would create iam role policy")[1] == (
        f"would put inline policy spotshift-trainer-access on role {names['role']}")
    assert lines_of(out, "would create instance profile")[1:] == [
        f"would create instance profile {names['role']}",
        f"would add role {names['role']} to instance profile {names['role']}"]
    assert lines_of(out, "would create security group")[1].startswith(f"would create security group {names['group']} in vpc-")
    assert "runtime IAM policy" not in out


def test_dry_run_on_an_owners_bucket_changes_nothing_and_a_real_run_then_does_what_it_said(
        moto_endpoint, tmp_path, names):
    clients = moto_clients(moto_endpoint)
    owners_bucket(clients("s3", REGION), names["bucket"])
    settings = settings_for(tmp_path, names)
    before = account_state(clients, names)
    code, planned = aws("setup", settings, clients, dry_run=True)
    assert code == 0, planned
    assert account_state(clients, names) == before
    plan = lines_of(planned, "would update s3 bucket")
    assert plan[1:] == ["would set BlockPublicPolicy=true", "would set RestrictPublicBuckets=true",
                        "would add lifecycle rule spotshift-abort-multipart (abort uploads after 1 day on every object)",
                        "would add lifecycle rule spotshift-expire-finished-checkpoints (expire after 30 days on tag "
                        "spotshift:expire=true)"]

    code, done = aws("setup", settings, clients)
    assert code == 0, done
    assert [line.removeprefix("would ") for line in plan[1:]] == [  # what it said, in the past tense
        line.replace("added ", "add ", 1) for line in lines_of(done, "updated      s3 bucket")[1:]]
    assert account_state(clients, names) != before

    after = account_state(clients, names)  # set up: a dry run now plans nothing
    code, nothing = aws("setup", settings, clients, dry_run=True)
    assert code == 0 and account_state(clients, names) == after
    # moto makes the spot service-linked role under another name, so GetRole never finds it there
    # (setup's create answers EntityAlreadyExists); on AWS that line says exists too
    planned_again = [line for line in nothing.splitlines()[1:] if "service-linked role" not in line]
    assert not [line for line in planned_again if "would " in line], nothing
    assert f"unchanged    s3 bucket            {names['bucket']}" in nothing


# ---- teardown --delete-bucket ----

def test_teardown_deletes_a_bucket_setup_created_with_more_than_one_batch_of_objects(moto_endpoint, tmp_path, names):
    clients = moto_clients(moto_endpoint)
    settings = settings_for(tmp_path, names)
    assert aws("setup", settings, clients)[0] == 0
    s3 = clients("s3", REGION)
    assert s3.get_bucket_tagging(Bucket=names["bucket"])["TagSet"] == [
        {"Key": "spotshift:created-by", "Value": "setup"}]
    for i in range(1001):  # two DeleteObjects batches, two listing pages
        s3.put_object(Bucket=names["bucket"], Key=f"jobs/j/ckpt/{i:04d}", Body=b"x")
    s3.put_object(Bucket=names["bucket"], Key="models/users-own.bin", Body=b"y")  # outside spotshift's prefixes

    code, out = aws("teardown", settings, clients, delete_bucket=True)
    assert code == 0, out
    assert f"deleted      s3 bucket            {names['bucket']}" in out
    assert names["bucket"] not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_teardown_empties_a_versioned_bucket_of_every_version_and_delete_marker(moto_endpoint, tmp_path, names):
    clients = moto_clients(moto_endpoint)
    settings = settings_for(tmp_path, names)
    assert aws("setup", settings, clients)[0] == 0
    s3 = clients("s3", REGION)
    s3.put_bucket_versioning(Bucket=names["bucket"], VersioningConfiguration={"Status": "Enabled"})
    for body in (b"1", b"2"):
        s3.put_object(Bucket=names["bucket"], Key="jobs/j/progress.json", Body=body)
    s3.delete_object(Bucket=names["bucket"], Key="jobs/j/progress.json")  # a delete marker
    versions = s3.list_object_versions(Bucket=names["bucket"])
    assert len(versions["Versions"]) == 2 and len(versions["DeleteMarkers"]) == 1

    code, out = aws("teardown", settings, clients, delete_bucket=True)
    assert code == 0, out
    assert names["bucket"] not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_teardown_names_a_key_it_cannot_delete_and_leaves_the_bucket(moto_endpoint, tmp_path, names):
    """A legal hold (object lock) is a refusal moto makes itself: DeleteObjects answers the key in
    Errors (AccessDenied), as S3 does."""
    clients = moto_clients(moto_endpoint)
    settings = settings_for(tmp_path, names)
    assert aws("setup", settings, clients)[0] == 0
    s3 = clients("s3", REGION)
    s3.put_bucket_versioning(Bucket=names["bucket"], VersioningConfiguration={"Status": "Enabled"})
    s3.put_object_lock_configuration(Bucket=names["bucket"], ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})
    s3.put_object(Bucket=names["bucket"], Key="jobs/j/final/model.safetensors", Body=b"w")
    s3.put_object_legal_hold(Bucket=names["bucket"], Key="jobs/j/final/model.safetensors", LegalHold={"Status": "ON"})
    s3.put_object(Bucket=names["bucket"], Key="jobs/j/logs/i-1.log", Body=b"l")

    code, out = aws("teardown", settings, clients, delete_bucket=True)
    assert code == 1, out
    step = lines_of(out, "kept         s3 bucket")
    assert step[1] == ("PROBLEM: 1 object(s) could not be deleted, so the bucket stays (run teardown again once they "
                       "can be deleted):")
    assert step[2] == ("jobs/j/final/model.safetensors: AccessDenied: Access Denied because object protected by "
                       "object lock.")
    assert [v["Key"] for v in s3.list_object_versions(Bucket=names["bucket"]).get("Versions", [])] == [
        "jobs/j/final/model.safetensors"]  # the rest is gone, the bucket stays
    assert "deleted      iam role" in out  # the other steps ran


def test_teardown_leaves_a_bucket_setup_did_not_create_whole_and_says_why(moto_endpoint, tmp_path, names):
    clients = moto_clients(moto_endpoint)
    s3 = clients("s3", REGION)
    owners_bucket(s3, names["bucket"])
    settings = settings_for(tmp_path, names)
    assert aws("setup", settings, clients)[0] == 0
    s3.put_object(Bucket=names["bucket"], Key="jobs/j/final/model.safetensors", Body=b"w")

    code, out = aws("teardown", settings, clients, delete_bucket=True)
    assert code == 1, out
    problem = lines_of(out, "kept         s3 bucket")[1]
    assert problem.startswith(f"PROBLEM: bucket {names['bucket']} was not created by `spotshift aws setup` (it has no "
                              "tag spotshift:created-by=setup): left in place with everything in it.")
    assert f"aws s3 rm s3://{names['bucket']}/jobs/ --recursive" in problem
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=names["bucket"])["Contents"]) == [
        "jobs/j/final/model.safetensors", "logs/app.log"]


def test_teardown_of_a_bucket_that_is_gone_says_absent(moto_endpoint, tmp_path, names):
    code, out = aws("teardown", settings_for(tmp_path, names), moto_clients(moto_endpoint), delete_bucket=True)
    assert code == 0, out
    assert f"absent       s3 bucket            {names['bucket']}" in out


def test_the_cli_takes_dry_run_for_setup_only():
    from deployments.aws_cli import add_aws_parser

    parser = argparse.ArgumentParser()
    add_aws_parser(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["aws", "setup", "--dry-run"]).dry_run is True
    assert parser.parse_args(["aws", "setup"]).dry_run is False
    with pytest.raises(SystemExit):
        parser.parse_args(["aws", "teardown", "--dry-run"])
