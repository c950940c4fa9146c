"""A job's inputs on S3: a local model or dataset of an EC2 job uploaded under the job's prefix at
submit (scanned first, so a refusal uploads nothing), and a read of the user's model files that
says which key was refused and how to grant it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from botocore.exceptions import ClientError

from spotshift.aws.errors import NotFound, PermissionDenied, SpotshiftAwsError, map_client_error
from spotshift.job_inputs import (SETUP_DATA, InputRefusal, InputsRefused, JobInput, human_bytes, size_refusal,
                                  upload_name)
from training.missing_keys import PermissionDenied as ReadDenied
from training.missing_keys import is_missing_key
from training.storage import split_s3_uri

SKIPPED_DIRS = frozenset({".git", ".cache"})  # a git clone's objects, huggingface_hub's download state


@dataclass(frozen=True)
class LocalInput:
    """A local input found readable and within the size limit: its files (path, key relative to the
    upload prefix) and their total size."""

    field: str
    source: str
    files: tuple[tuple[Path, str], ...]
    total_bytes: int


@dataclass(frozen=True)
class InputUpload:
    """What submit uploaded for one field: from where, to which URI, how much, how long it took."""

    field: str
    source: str
    uri: str
    bytes: int
    files: int
    seconds: float

    def describe(self) -> str:
        return (f"uploaded {self.field} {self.source} ({human_bytes(self.bytes)}, {self.files} "
                f"file{'s' if self.files != 1 else ''}) to {self.uri} in {self.seconds:.1f} s")


def scan_local_input(item: JobInput, *, limit_bytes: int) -> LocalInput:
    """The files of a local model directory or dataset file; InputsRefused naming the field when it
    does not exist, is not the right kind, cannot be read, holds nothing, or is over `limit_bytes`.
    A model directory's .git and .cache folders are left out."""
    path = Path(item.value).expanduser()

    def refuse(reason: str) -> InputsRefused:
        return InputsRefused([InputRefusal(item.field, item.value, reason)])

    if not path.exists():
        raise refuse("no such file or directory on this machine")
    if item.field == "model":
        if not path.is_dir():
            raise refuse("a local model must be a directory (config.json and the weights)")
        if not os.access(path, os.R_OK | os.X_OK):
            raise refuse("the directory is not readable by this user")
        found = [(p, p.relative_to(path).as_posix()) for p in sorted(path.rglob("*"))
                 if p.is_file() and not SKIPPED_DIRS.intersection(p.relative_to(path).parts[:-1])]
    else:
        if not path.is_file():
            raise refuse("a local dataset must be a .txt or .jsonl file")
        found = [(path, upload_name(path.name))]
    unreadable = [rel for p, rel in found if not os.access(p, os.R_OK)]
    if unreadable:
        raise refuse(f"{len(unreadable)} file(s) are not readable by this user, e.g. {unreadable[0]}")
    if not found:
        raise refuse("the directory holds no files")
    total = sum(p.stat().st_size for p, _ in found)
    too_big = size_refusal(item.field, item.value, total, limit_bytes)
    if too_big is not None:
        raise InputsRefused([too_big])
    return LocalInput(item.field, item.value, tuple(found), total)


def upload_local_input(s3: Any, local: LocalInput, bucket: str, key_prefix: str, uri: str, *,
                       clock: Callable[[], float] = time.monotonic, config: Any = None) -> InputUpload:
    """Upload every file of `local` under s3://bucket/key_prefix with boto3's transfer manager
    (multipart above its threshold); a failure deletes what this upload wrote and raises the typed
    AWS error. `uri` is what the job's spec will name."""
    started = clock()
    written: list[str] = []
    try:
        for path, rel in local.files:
            key = key_prefix + rel
            written.append(key)
            s3.upload_file(str(path), bucket, key, **({"Config": config} if config is not None else {}))
    except Exception as exc:
        delete_keys(s3, bucket, written)
        cause = exc if isinstance(exc, ClientError) else exc.__context__
        if isinstance(cause, ClientError):
            raise map_client_error(cause, context=f"upload of {local.field} {local.source} to s3://{bucket}/"
                                   f"{key_prefix}") from exc
        raise
    return InputUpload(field=local.field, source=local.source, uri=uri, bytes=local.total_bytes,
                       files=len(local.files), seconds=clock() - started)


def delete_keys(s3: Any, bucket: str, keys: list[str]) -> None:
    """Best effort: remove objects an abandoned submit uploaded (the bucket's lifecycle rule
    removes an incomplete multipart upload's parts after a day)."""
    for key in keys:
        try:
            s3.delete_object(Bucket=bucket, Key=key)
        except ClientError:
            pass


class InputAccessDenied(PermissionDenied):
    """S3 refused to let spotshift read the user's input: the key and the `setup --data` command."""


def read_input_object(s3: Any, uri: str, *, field: str, grant: str,
                      byte_range: tuple[int, int] | None = None) -> bytes | None:
    """The bytes of one object of a job's input (s3://bucket/key), None when there is none;
    `byte_range` (first, last), inclusive: only those bytes (a ranged GET, e.g. a safetensors header).

    A 403 is told apart from an absent key by one listing (S3 answers a missing key 403 to a caller
    whose ListBucket grant carries an s3:prefix condition: training.missing_keys). A denied read
    raises InputAccessDenied naming the key and `setup --data <grant>`; nothing here is retried."""
    bucket, key = split_s3_uri(uri)
    try:
        extra = {"Range": f"bytes={byte_range[0]}-{byte_range[1]}"} if byte_range else {}
        return s3.get_object(Bucket=bucket, Key=key, **extra)["Body"].read()
    except ClientError as exc:
        try:
            if is_missing_key(s3, bucket, key, exc):
                return None
            mapped: SpotshiftAwsError = map_client_error(exc, region="global")
        except ReadDenied as denied:
            raise _denied(field, uri, grant, str(denied), exc) from exc
        except ClientError as listing:
            raise map_client_error(listing, region="global") from exc
        if isinstance(mapped, PermissionDenied):
            raise _denied(field, uri, grant, str(mapped), exc) from exc
        if isinstance(mapped, NotFound):  # NoSuchBucket
            raise NotFound(f"{field}: {uri} cannot be read: {mapped}", code=mapped.code,
                           operation=mapped.operation) from exc
        raise mapped from exc


def _denied(field: str, uri: str, grant: str, reason: str, exc: ClientError) -> InputAccessDenied:
    code = str((exc.response.get("Error") or {}).get("Code", "AccessDenied"))
    return InputAccessDenied(
        f"{field}: reading {uri} was denied ({reason}). Grant read on it with `{SETUP_DATA} {grant}`, attach the "
        "runtime policy it prints and export the SPOTSHIFT_DATA_PREFIXES line it prints",
        code=code, operation=exc.operation_name or "GetObject")
