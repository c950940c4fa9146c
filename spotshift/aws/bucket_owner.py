"""ExpectedBucketOwner on every S3 call a client makes: a bucket of another account (a name
taken after ours was deleted, a typo) answers 403 instead of receiving checkpoints."""

from __future__ import annotations

from typing import Any

OWNER_PARAM = "ExpectedBucketOwner"


def _add_owner(account: str):
    def handler(params: dict, model: Any, **_: Any) -> dict | None:
        members = model.input_shape.members if model.input_shape is not None else {}
        if OWNER_PARAM in members and OWNER_PARAM not in params:
            return {**params, OWNER_PARAM: account}
        return None
    return handler


def expect_bucket_owner(s3: Any, account: str) -> Any:
    """The same client, sending ExpectedBucketOwner=account on every operation that takes it."""
    s3.meta.events.register("provide-client-params.s3.*", _add_owner(account),
                            unique_id=f"spotshift-expected-bucket-owner-{account}")
    return s3
