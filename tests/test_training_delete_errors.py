"""DeleteObjects in quiet mode answers HTTP 200 and lists only the keys S3 kept: the trainer's store
names them (DeleteFailed) instead of reporting old checkpoints pruned while they stay billed."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import ANY, Stubber

from training.storage import DeleteFailed, S3Store


def stubbed_s3() -> tuple[object, Stubber]:
    """An S3 client whose answers the test gives (botocore's Stubber): moto deletes every key it is
    asked to, so a per-key refusal (object lock, a bucket policy) can only be stubbed."""
    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    stubber.activate()
    return client, stubber


def test_keys_s3_kept_are_named_after_every_request_is_made():
    s3, stubber = stubbed_s3()
    keys = [f"checkpoints/step-{i:08d}/model.safetensors" for i in range(1500)]
    kept = {"Key": "jobs/j/" + keys[3], "Code": "AccessDenied", "Message": "Access Denied"}
    stubber.add_response("delete_objects", {"Errors": [kept]}, {"Bucket": "spotshift-jobs", "Delete": ANY})
    stubber.add_response("delete_objects", {}, {"Bucket": "spotshift-jobs", "Delete": ANY})  # the second 500 keys: all gone
    with pytest.raises(DeleteFailed, match=r"did not delete 1 key\(s\): s3://spotshift-jobs/jobs/j/checkpoints/step-00000003/"
                                           r"model.safetensors \(AccessDenied: Access Denied\)") as raised:
        S3Store(s3, "spotshift-jobs", "jobs/j/").delete_keys(keys)
    assert raised.value.keys == [kept["Key"]]
    stubber.assert_no_pending_responses()  # both requests made


def test_a_delete_of_keys_that_all_go_raises_nothing(s3, bucket):
    store = S3Store(s3, bucket, "jobs/j/")
    for name in ("a", "b"):
        store.put_bytes(name, b"x")
    store.delete_keys(["a", "b"])
    assert store.list_keys("") == []
