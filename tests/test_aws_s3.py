"""spotshift.aws.s3.get_if_changed under S3's rule for a missing key: a 403 that a listing confirms
is an absence (moto behind the 403 proxy); a denied read of an object that exists is PermissionDenied."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from deployments.local_aws import client
from spotshift.aws.errors import PermissionDenied, Throttled
from spotshift.aws.s3 import ObjectRead, get_if_changed
from tests.s3_missing_key_403 import s3_answering_missing_keys_with_403

URI = "s3://b/jobs/j/metrics.jsonl"


def test_a_missing_key_answered_403_is_no_object(moto_endpoint, s3, bucket):
    with s3_answering_missing_keys_with_403(moto_endpoint) as proxy:
        uri = f"s3://{bucket}/jobs/j/metrics.jsonl"
        assert get_if_changed(client("s3", proxy.endpoint), uri, None) == ObjectRead(changed=False)
        assert get_if_changed(client("s3", proxy.endpoint), uri, '"gone"') == ObjectRead(changed=True)
        assert proxy.denied_keys() == {f"{bucket}/jobs/j/metrics.jsonl"}


def stubbed(listing_error: str | None = None):
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(s3)
    stubber.add_client_error("get_object", service_error_code="AccessDenied", http_status_code=403)
    if listing_error:
        stubber.add_client_error("list_objects_v2", service_error_code=listing_error, http_status_code=503)
    else:
        stubber.add_response("list_objects_v2", {"Contents": [{"Key": "jobs/j/metrics.jsonl"}], "KeyCount": 1},
                             {"Bucket": "b", "Prefix": "jobs/j/metrics.jsonl", "MaxKeys": 1})
        # the listing shows the key: one HEAD tells a denied read from a key written after the GET
        stubber.add_client_error("head_object", service_error_code="403", http_status_code=403)
    stubber.activate()
    return s3


def test_a_denied_read_of_an_object_that_exists_is_permission_denied():
    with pytest.raises(PermissionDenied) as raised:
        get_if_changed(stubbed(), URI, None)
    assert raised.value.code == "AccessDenied" and raised.value.operation == "GetObject"


def test_a_listing_that_fails_otherwise_is_its_typed_error():
    with pytest.raises(Throttled):
        get_if_changed(stubbed(listing_error="SlowDown"), URI, None)
