"""S3's rule for a key that is not there: 404 NoSuchKey to a caller allowed s3:ListBucket on the
bucket, 403 AccessDenied to any other. One helper tells an absent key from a denied read."""

from __future__ import annotations

NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
DENIED_CODES = frozenset({"403", "AccessDenied"})  # "403": a HEAD's answer, which has no body


class PermissionDenied(PermissionError):
    """S3 refused `action` on `uri`, and the object is there (or S3 refused to say): not an absence."""

    def __init__(self, action: str, uri: str, reason: str):
        self.action, self.uri = action, uri
        super().__init__(f"{action} on {uri} was denied: {reason}")


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ("" for anything else)."""
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error") or {}).get("Code", ""))


def is_missing_key(s3, bucket: str, key: str, exc: BaseException, action: str = "s3:GetObject") -> bool:
    """Whether the GET or HEAD of s3://bucket/key that raised `exc` (a botocore ClientError) found
    no object there. False for any other error: the caller re-raises it.

    404 NoSuchKey: absent. 403 AccessDenied: S3 answers a missing key so to a caller without
    s3:ListBucket on the bucket (S3 API reference, GetObject: "If you don't have the s3:ListBucket
    permission, Amazon S3 returns an HTTP status code 403 Access Denied error"). The trainer's role
    may list only with an s3:prefix condition, which a GET does not carry, so on AWS its every read
    of a missing key answers 403. One ListObjectsV2(Prefix=key, MaxKeys=1), which that grant allows,
    tells (the key itself sorts first among the keys it prefixes): absent if not listed; PermissionDenied
    naming the key and `action` if the listing is refused. A listed key may have been written after
    the GET (the orchestrator writes control.json at any moment): one HEAD, the same s3:GetObject the
    GET needed, tells: answered, the key was absent when the GET read it (the next read sees it);
    403 again, PermissionDenied.

    Requests: a present key costs its one GET as before; a missing key one (the 404) where the caller
    may list the bucket, two (the 403 and one LIST) where it may not; a denied key three.
    """
    code = error_code(exc)
    if code in NOT_FOUND_CODES:
        return True
    if code not in DENIED_CODES:
        return False
    from botocore.exceptions import ClientError

    uri = f"s3://{bucket}/{key}"
    try:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    except ClientError as listing:
        if error_code(listing) not in DENIED_CODES:
            raise
        raise PermissionDenied(action, uri, f"{code}, and s3:ListBucket with prefix {key!r}, which would "
                                            "tell a missing key from a denied read, was denied too") from exc
    if not any(entry.get("Key") == key for entry in listed.get("Contents", [])):
        return True
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as head:
        if error_code(head) in NOT_FOUND_CODES:  # deleted again since the listing
            return True
        if error_code(head) not in DENIED_CODES:
            raise
        raise PermissionDenied(action, uri, f"{code}, and the object exists (ListObjectsV2 shows it)") from exc
    return True  # written between the GET and the listing
