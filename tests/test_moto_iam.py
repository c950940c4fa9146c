"""tests/moto_iam.py's table against the locked moto: for each entry, a user granted only AWS's
action is refused the call by moto, and granted moto's names beside it too, is let through (so each
name is needed and enough); and no printed policy names an action only moto needs."""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable

import boto3
import pytest
from botocore.exceptions import ClientError

from deployments.local_aws import moto_server_process
from spotshift.aws.calls import retry_config
from spotshift.aws.iam import policy_actions, runtime_policy, setup_policy, trainer_policy
from tests.aws_helpers import moto_clients
from tests.moto_iam import MOTO_NAMES, MOTO_ONLY_NAMES, for_moto

BUCKET = "spotshift-moto-names"
KEY = "jobs/j1/progress.json"
LIFECYCLE = {"Rules": [{"ID": "r", "Status": "Enabled", "Filter": {"Prefix": "jobs/"}, "Expiration": {"Days": 7}}]}
pytestmark = pytest.mark.slow


def multipart(s3) -> Any:
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="jobs/j1/big")["UploadId"]
    part = s3.upload_part(Bucket=BUCKET, Key="jobs/j1/big", UploadId=upload, PartNumber=1, Body=b"x")
    return s3.complete_multipart_upload(Bucket=BUCKET, Key="jobs/j1/big", UploadId=upload,
                                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})


def unless_missing(call: Callable[[], Any], code: str) -> Any:
    """call(), where S3's answer that the bucket has no such configuration means it was let through."""
    try:
        return call()
    except ClientError as exc:
        if exc.response["Error"]["Code"] != code:
            raise


def delete_objects(s3) -> Any:
    answer = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "jobs/j1/gone"}]})
    if answer.get("Errors"):  # moto refuses DeleteObjects with a 200 naming every key AccessDenied
        raise AssertionError(f"refused: {answer['Errors']}")
    return answer


CALLS: dict[str, Callable[[Any], Any]] = {  # the AWS action -> a call AWS authorizes under it
    "s3:PutBucketPublicAccessBlock": lambda s3: s3.put_public_access_block(
        Bucket=BUCKET, PublicAccessBlockConfiguration={"BlockPublicAcls": True, "IgnorePublicAcls": True,
                                                       "BlockPublicPolicy": True, "RestrictPublicBuckets": True}),
    "s3:PutLifecycleConfiguration": lambda s3: s3.put_bucket_lifecycle_configuration(
        Bucket=BUCKET, LifecycleConfiguration=LIFECYCLE),
    "s3:GetBucketPublicAccessBlock": lambda s3: unless_missing(
        lambda: s3.get_public_access_block(Bucket=BUCKET), "NoSuchPublicAccessBlockConfiguration"),
    "s3:GetLifecycleConfiguration": lambda s3: unless_missing(
        lambda: s3.get_bucket_lifecycle_configuration(Bucket=BUCKET), "NoSuchLifecycleConfiguration"),
    "s3:ListBucket": lambda s3: s3.list_objects_v2(Bucket=BUCKET, Prefix="jobs/"),
    "s3:ListBucketVersions": lambda s3: s3.list_object_versions(Bucket=BUCKET, Prefix="jobs/"),
    "s3:DeleteObject": delete_objects,
    "s3:GetObject": lambda s3: s3.head_object(Bucket=BUCKET, Key=KEY),
    "s3:PutObject": multipart,
}


@pytest.fixture(scope="module")
def moto_iam():
    with moto_server_process(env={"INITIAL_NO_AUTH_ACTION_COUNT": "3"}) as endpoint:
        boot = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="boot",
                            aws_secret_access_key="boot", config=retry_config(1))
        key, secret = user(boot, {"Effect": "Allow", "Action": "*", "Resource": "*"})
        admin = moto_clients(endpoint, key=key, secret=secret)
        admin("s3", "us-east-1").create_bucket(Bucket=BUCKET)
        yield endpoint, admin


def user(iam, *statements: dict) -> tuple[str, str]:
    name = f"u-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="p",
                        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": list(statements)}))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def s3_granted(moto_iam, policy: dict) -> Any:
    endpoint, admin = moto_iam
    key, secret = user(admin("iam", "us-east-1"), *policy["Statement"])
    return moto_clients(endpoint, key=key, secret=secret)("s3", "us-east-1")


def test_every_entry_has_a_call_that_proves_it():
    assert set(CALLS) == set(MOTO_NAMES)


@pytest.mark.parametrize("action", sorted(MOTO_NAMES))
def test_moto_refuses_the_aws_action_alone_and_accepts_it_with_its_own_names(moto_iam, action):
    _, admin = moto_iam
    admin("s3", "us-east-1").put_object(Bucket=BUCKET, Key=KEY, Body=b"{}")
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": [action], "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"]}]}

    with pytest.raises(Exception, match="AccessDenied|403"):  # a HEAD's 403 has no body to name it
        CALLS[action](s3_granted(moto_iam, policy))
    CALLS[action](s3_granted(moto_iam, for_moto(policy)))


def test_for_moto_drops_an_action_with_its_moto_names():
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": "arn:aws:s3:::b/*"}]}
    assert policy_actions(for_moto(policy, drop="s3:GetObject")) == sorted(
        ["s3:PutObject", "s3:CreateMultipartUpload", "s3:UploadPart", "s3:CompleteMultipartUpload"])


@pytest.mark.parametrize("printed", [
    setup_policy(),
    setup_policy(bucket="my-bucket", trainer_role="r", account="123456789012"),
    runtime_policy(),
    runtime_policy(bucket="my-bucket", trainer_role="r", account="123456789012", data_prefixes=["s3://my-data/x/"]),
    trainer_policy(bucket="my-bucket", secret_arn="arn:aws:secretsmanager:us-east-1:123456789012:secret:spotshift/hf-abc",
                   data_prefixes=["s3://my-data/x/"]),
], ids=["setup", "setup-scoped", "runtime", "runtime-scoped", "trainer"])
def test_no_printed_policy_names_an_action_only_moto_needs(printed):
    assert not set(policy_actions(printed)) & MOTO_ONLY_NAMES
