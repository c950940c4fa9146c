"""ExpectedBucketOwner is added to every S3 call of the orchestrator's client (Stubber: moto
ignores the header, real S3 answers 403 for another account's bucket)."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from spotshift.aws.bucket_owner import expect_bucket_owner
from training.contract import read_progress


def test_every_operation_that_takes_it_carries_the_owner():
    s3 = expect_bucket_owner(boto3.client("s3", region_name="us-east-1", aws_access_key_id="x",
                                          aws_secret_access_key="x"), "123456789012")
    with Stubber(s3) as stub:
        stub.add_response("put_object", {}, {"Bucket": "b", "Key": "k", "Body": b"x", "ExpectedBucketOwner": "123456789012"})
        stub.add_response("list_objects_v2", {}, {"Bucket": "b", "Prefix": "jobs/", "ExpectedBucketOwner": "123456789012"})
        stub.add_response("list_buckets", {"Buckets": []}, {})  # takes no owner: left alone
        s3.put_object(Bucket="b", Key="k", Body=b"x")
        s3.list_objects_v2(Bucket="b", Prefix="jobs/")
        s3.list_buckets()


def test_another_accounts_bucket_refuses_the_job_keys():
    s3 = expect_bucket_owner(boto3.client("s3", region_name="us-east-1", aws_access_key_id="x",
                                          aws_secret_access_key="x"), "123456789012")
    with Stubber(s3) as stub:
        stub.add_client_error("get_object", service_error_code="AccessDenied", http_status_code=403,
                              expected_params={"Bucket": "b", "Key": "jobs/j/progress.json",
                                               "ExpectedBucketOwner": "123456789012"})
        # a 403 on a key the trainer may find absent is confirmed by a listing (training.missing_keys),
        # which another account's bucket refuses as well
        stub.add_client_error("list_objects_v2", service_error_code="AccessDenied", http_status_code=403,
                              expected_params={"Bucket": "b", "Prefix": "jobs/j/progress.json", "MaxKeys": 1,
                                               "ExpectedBucketOwner": "123456789012"})
        with pytest.raises(Exception, match="AccessDenied"):
            read_progress(s3, "s3://b/jobs/j/")


def test_calls_still_work_against_the_moto_server(s3, bucket):
    owned = expect_bucket_owner(s3, "123456789012")
    owned.put_object(Bucket=bucket, Key="jobs/j/spec.json", Body=b"{}")
    assert owned.get_object(Bucket=bucket, Key="jobs/j/spec.json")["Body"].read() == b"{}"
