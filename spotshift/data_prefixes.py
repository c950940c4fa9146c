"""The user's own S3 data that jobs may read (`s3://bucket/prefix`): parsed and validated once, then
granted read-only to the orchestrator and the trainer (spotshift.aws.iam). Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

# S3's rule for the bucket names a new bucket may take (3-63 characters: lowercase letters, digits,
# dots and hyphens, a letter or digit at each end); the prefix is any key prefix without IAM's
# wildcards, which would widen the grant.
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
IAM_WILDCARDS = ("*", "?", "$")


@dataclass(frozen=True)
class DataPrefix:
    """Read-only access to every key of `bucket` that starts with `prefix` ("" = the whole bucket).
    A prefix is a string prefix, as S3's: `models/base` also covers `models/base2/...`; end it
    with "/" to grant one folder."""

    bucket: str
    prefix: str = ""

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def covers(self, uri: str) -> bool:
        """Whether the object or folder at `uri` (s3://bucket/key) lies under this prefix."""
        return uri.startswith(self.uri)


def parse_data_prefix(value: str) -> DataPrefix:
    """`s3://bucket[/prefix]` -> DataPrefix; ValueError naming the value and what is allowed."""
    rule = ("a data prefix is s3://BUCKET/PREFIX (BUCKET: 3-63 lowercase letters, digits, dots or hyphens; "
            f"PREFIX: any key prefix without {' '.join(IAM_WILDCARDS)})")
    if not isinstance(value, str) or not value.startswith("s3://"):
        raise ValueError(f"data prefix {value!r} is not an S3 URI: {rule}")
    bucket, _, prefix = value[len("s3://"):].partition("/")
    if not BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
        raise ValueError(f"data prefix {value!r}: bucket {bucket!r} is not a valid S3 bucket name: {rule}")
    if any(c in prefix for c in IAM_WILDCARDS):
        raise ValueError(f"data prefix {value!r}: the prefix may not contain {' '.join(IAM_WILDCARDS)} "
                         f"(IAM would read them as wildcards or variables): {rule}")
    return DataPrefix(bucket, prefix)


def parse_data_prefixes(values: list[str] | tuple[str, ...]) -> tuple[DataPrefix, ...]:
    """Each value parsed (the first bad one raises), duplicates dropped, in the given order."""
    return tuple(dict.fromkeys(parse_data_prefix(v) for v in values))
