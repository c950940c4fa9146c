"""training.storage: big objects go up as multipart uploads straight from memory and come back as
writable buffers, byte for byte (moto S3); a missing key is a FileNotFoundError naming the URI."""

from __future__ import annotations

import os

import pytest

from training.storage import MULTIPART_THRESHOLD, LocalStore, MemoryReader, S3Store


def test_big_object_round_trips_through_multipart_upload_and_ranged_download(s3, bucket):
    store = S3Store(s3, bucket, "jobs/x/")
    data = bytearray(os.urandom(1024)) * (MULTIPART_THRESHOLD // 1024 * 2 + 3)  # > 2 parts
    store.put_bytes("checkpoints/step-1/model.safetensors", memoryview(data))
    stored = s3.get_object(Bucket=bucket, Key="jobs/x/checkpoints/step-1/model.safetensors")
    assert stored["ContentLength"] == len(data) and "-" in stored["ETag"]  # multipart ETag
    back = store.get_buffer("checkpoints/step-1/model.safetensors")
    assert back == data and not back.readonly


def test_missing_object_is_file_not_found_naming_the_uri(s3, bucket, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"s3://{bucket}/jobs/x/nope"):
        S3Store(s3, bucket, "jobs/x/").get_buffer("nope")
    with pytest.raises(FileNotFoundError, match="nope"):
        LocalStore(tmp_path).get_buffer("nope")


def test_local_store_buffer_is_writable_and_equal(tmp_path):
    store = LocalStore(tmp_path)
    store.put_bytes("a/b.bin", memoryview(b"abc" * 10))
    back = store.get_buffer("a/b.bin")
    assert back == b"abc" * 10 and not back.readonly


def test_memory_reader_reads_seeks_and_reports_size():
    reader = MemoryReader(memoryview(b"0123456789"))
    assert reader.seek(0, os.SEEK_END) == 10
    reader.seek(3)
    assert reader.read(4) == b"3456" and reader.tell() == 7
    assert reader.read() == b"789" and reader.read(5) == b""
