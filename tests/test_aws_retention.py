"""A finished job's checkpoints are tagged for the lifecycle rule; its final model is not."""

from __future__ import annotations

from spotshift.aws.retention import mark_checkpoints_expiring


def tags(s3, bucket, key) -> dict:
    return {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}


def test_only_the_checkpoints_are_marked_to_expire(s3, bucket):
    keys = [f"jobs/j1/checkpoints/step-{n}/model.safetensors" for n in (10, 20)] + [
        "jobs/j1/checkpoints/LATEST.json", "jobs/j1/final/model.safetensors", "jobs/j2/checkpoints/step-5/x"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    assert mark_checkpoints_expiring(s3, bucket, "jobs/j1/") == 3
    assert all(tags(s3, bucket, k) == {"spotshift:expire": "true"} for k in keys[:3])
    assert tags(s3, bucket, "jobs/j1/final/model.safetensors") == {}
    assert tags(s3, bucket, "jobs/j2/checkpoints/step-5/x") == {}
