"""Object storage for the trainer: one small interface over an S3 prefix or a local directory."""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from training.missing_keys import is_missing_key


class ObjectStore(Protocol):
    """Keys are relative to the store's root ("checkpoints/step-5/model.safetensors")."""

    def put_bytes(self, key: str, data: bytes | memoryview, *, background: bool = False) -> None: ...
    def get_bytes(self, key: str) -> bytes | None: ...  # None if absent
    def get_buffer(self, key: str) -> memoryview: ...  # writable; FileNotFoundError if absent
    # (absent: S3's 404, or its 403 to a caller without s3:ListBucket when a listing confirms it;
    # a denied read of an object that exists raises training.missing_keys.PermissionDenied)
    def upload_file(self, path: Path, key: str) -> None: ...
    def download_file(self, key: str, path: Path) -> None: ...
    def list_keys(self, prefix: str) -> list[str]: ...
    def delete_keys(self, keys: list[str]) -> None: ...
    def uri(self, key: str) -> str: ...


class DeleteFailed(OSError):
    """S3 kept some keys of a DeleteObjects request (its per-key Errors: AccessDenied, object lock...)."""

    def __init__(self, bucket: str, errors: list[dict]):
        self.keys = [e.get("Key", "") for e in errors]
        shown = ", ".join(f"s3://{bucket}/{e.get('Key', '')} ({e.get('Code', '?')}: {e.get('Message', '')})"
                          for e in errors[:3])
        more = f" and {len(errors) - 3} more" if len(errors) > 3 else ""
        super().__init__(f"S3 did not delete {len(errors)} key(s): {shown}{more}")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """'s3://bucket/a/b' -> ('bucket', 'a/b'); raises ValueError naming the expected form."""
    if not uri.startswith("s3://"):
        raise ValueError(f"expected an s3://bucket/key URI, got {uri!r}")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"s3 URI {uri!r} has no bucket; expected s3://bucket/key")
    return bucket, key


MULTIPART_THRESHOLD = 8 * 1024 * 1024
# parts in flight per object: all of boto3's default when a stop notice is racing the clock; few
# for a periodic checkpoint, whose upload threads would otherwise keep taking the GIL from the
# training thread (measured on an H100, 125M model, bench/checkpoint.py (c): 10 parts in flight
# cost 10% of the training throughput, 2 parts 5.5%, and the upload was no slower)
URGENT_PARTS = 10
BACKGROUND_PARTS = 2


def transfer_config(max_concurrency: int = URGENT_PARTS):
    """boto3's transfer settings for checkpoint-sized objects: 8 MiB parts, `max_concurrency` in flight."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=8 * 1024 * 1024,
                          max_concurrency=max_concurrency)


class MemoryReader(io.RawIOBase):
    """A seekable, read-only file over a bytes-like object, without copying it up front."""

    def __init__(self, data: bytes | memoryview):
        self._view = memoryview(data).cast("B")
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}[whence]
        self._position = max(0, base + offset)
        return self._position

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._position + size)
        chunk = bytes(self._view[self._position:end])
        self._position = max(self._position, end)
        return chunk

    def readinto(self, target) -> int:
        chunk = self.read(len(target))
        target[:len(chunk)] = chunk
        return len(chunk)


@dataclass(frozen=True)
class S3Store:
    s3: object  # a boto3 S3 client
    bucket: str
    prefix: str  # "" or ending in "/"

    @classmethod
    def from_uri(cls, s3, uri: str) -> "S3Store":
        bucket, prefix = split_s3_uri(uri)
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return cls(s3, bucket, prefix)

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _missing(self, key: str, exc: Exception) -> bool:
        """S3's rule for a missing key (404, or 403 without s3:ListBucket): training.missing_keys."""
        return is_missing_key(self.s3, self.bucket, self._key(key), exc)

    def put_bytes(self, key: str, data: bytes | memoryview, *, background: bool = False) -> None:
        """Small objects in one PUT; big ones as a parallel multipart upload read straight from
        `data` (boto3's transfer manager: one copy per part, no temporary file), with fewer parts
        in flight when `background`."""
        if len(data) <= MULTIPART_THRESHOLD:
            self.s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=bytes(data))
        else:
            config = transfer_config(BACKGROUND_PARTS if background else URGENT_PARTS)
            self.s3.upload_fileobj(MemoryReader(data), self.bucket, self._key(key), Config=config)

    def get_buffer(self, key: str) -> memoryview:
        """One object in memory (parallel ranged GETs when big), as a writable buffer."""
        from botocore.exceptions import ClientError

        sink = io.BytesIO()
        try:
            self.s3.download_fileobj(self.bucket, self._key(key), sink, Config=transfer_config())
        except ClientError as exc:
            if self._missing(key, exc):
                raise FileNotFoundError(f"no object at {self.uri(key)}") from exc
            raise
        return sink.getbuffer()

    def get_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is none (a 404, or a 403 that a listing confirms)."""
        from botocore.exceptions import ClientError

        try:
            return self.s3.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if self._missing(key, exc):
                return None
            raise

    def upload_file(self, path: Path, key: str) -> None:
        self.s3.upload_file(str(path), self.bucket, self._key(key))

    def download_file(self, key: str, path: Path) -> None:
        from botocore.exceptions import ClientError

        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.s3.download_file(self.bucket, self._key(key), str(path))
        except ClientError as exc:
            if self._missing(key, exc):
                raise FileNotFoundError(f"no object at {self.uri(key)}") from exc
            raise

    def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            keys.extend(obj["Key"][len(self.prefix):] for obj in page.get("Contents", []))
        return sorted(keys)

    def delete_keys(self, keys: list[str]) -> None:
        """DeleteObjects, 1,000 keys a request. Quiet mode answers only the keys S3 did not delete
        (with HTTP 200): every request is made, then DeleteFailed names them."""
        errors: list[dict] = []
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": self._key(k)} for k in keys[start:start + 1000]]
            answer = self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})
            errors.extend(answer.get("Errors") or [])
        if errors:
            raise DeleteFailed(self.bucket, errors)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


@dataclass(frozen=True)
class LocalStore:
    root: Path

    def _path(self, key: str) -> Path:
        return self.root / key

    def put_bytes(self, key: str, data: bytes | memoryview, *, background: bool = False) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def get_bytes(self, key: str) -> bytes | None:
        path = self._path(key)
        return path.read_bytes() if path.is_file() else None

    def get_buffer(self, key: str) -> memoryview:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no file at {path}")
        data = bytearray(path.stat().st_size)
        with path.open("rb") as handle:
            handle.readinto(data)
        return memoryview(data)

    def upload_file(self, path: Path, key: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)

    def download_file(self, key: str, path: Path) -> None:
        if not self._path(key).is_file():
            raise FileNotFoundError(f"no file at {self._path(key)}")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._path(key), path)

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        search_root = base if base.is_dir() else base.parent
        if not search_root.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in search_root.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix))

    def delete_keys(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)

    def uri(self, key: str) -> str:
        return str(self._path(key))


def open_store(uri: str, s3=None) -> ObjectStore:
    """An S3Store for s3:// URIs (boto3's default client unless one is passed), else a LocalStore."""
    if uri.startswith("s3://"):
        if s3 is None:
            s3 = default_s3_client()
        return S3Store.from_uri(s3, uri)
    return LocalStore(Path(uri))


def s3_client_config():
    """The trainer's S3 client settings: enough connections for parallel parts (boto3's default is
    10), and no SHA-256 of every request body for SigV4 (boto3 already skips it for streaming
    uploads over HTTPS; integrity comes from TLS and the CRC32 checksum each part carries, and the
    manifest's sha256 is verified on resume). Over a plain-HTTP endpoint such as a local moto server
    boto3 would otherwise hash every byte once more."""
    from botocore.config import Config

    # read_timeout: S3 may take minutes to answer CompleteMultipartUpload for a big object
    return Config(max_pool_connections=64, read_timeout=300, s3={"payload_signing_enabled": False})


def default_s3_client():
    """boto3's standard configuration (AWS_ENDPOINT_URL, the instance profile, AWS_DEFAULT_REGION)
    with the trainer's client settings."""
    import boto3

    return boto3.client("s3", config=s3_client_config())


def read_uri_bytes(uri: str, s3=None) -> bytes:
    """Read one object (s3://bucket/key) or local file; raises FileNotFoundError naming the URI."""
    if uri.startswith("s3://"):
        bucket, key = split_s3_uri(uri)
        data = S3Store(s3 or default_s3_client(), bucket, "").get_bytes(key)
        if data is None:
            raise FileNotFoundError(f"no object at {uri}")
        return data
    path = Path(uri)
    if not path.is_file():
        raise FileNotFoundError(f"no file at {uri}")
    return path.read_bytes()
