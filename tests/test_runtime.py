"""blocks.runtime (issue 21): the Runtime is a frozen bundle of collaborators typed by their
Protocols, built from settings in blocks/; flows.runtime re-exports it. Fast: the local backend
on the session's moto server, the embedded stores under tmp_path, no Prefect API."""

from __future__ import annotations

import inspect
import typing
from dataclasses import FrozenInstanceError, replace

import pytest

import blocks.aws
from blocks.runtime import Runtime, local_runtime, runtime_from_settings, stores_only
from spotshift.aws.compute import ComputeBackend
from spotshift.aws.local_backend import LocalBackend
from spotshift.market.aws import AwsMarket
from spotshift.market.source import MarketSource
from spotshift.settings import Settings
from spotshift.stores import EmbeddedLedger, Jobs, JobStore, Ledger
from spotshift.stores.market_history import MarketHistoryStore, ZoneHistory
from spotshift.stores.throughput import ThroughputRecords, ThroughputStore

# S3 calls spotshift makes with the runtime's client (runtime.s3, typed by mypy_boto3_s3.S3Client)
S3_CALLS = ("get_object", "put_object", "head_object", "delete_object", "delete_objects", "list_objects_v2",
            "get_bucket_location", "upload_file", "upload_fileobj", "download_file", "download_fileobj",
            "get_paginator")


@pytest.fixture
def local_settings(tmp_path, moto_endpoint, aws_env, monkeypatch) -> Settings:
    """Settings of the local backend (a SPOTSHIFT home under tmp_path, the moto server), and no
    saved AwsCredentials block to look up (that would need a Prefect API)."""
    real = blocks.aws.load_aws_credentials
    monkeypatch.setattr(blocks.aws, "load_aws_credentials", lambda settings, block_name=None: real(settings, None))
    return Settings(home=tmp_path / "spotshift", aws_endpoint_url=moto_endpoint, compute_backend="local")


@pytest.fixture
def built(local_settings):
    rt = runtime_from_settings(local_settings)
    yield rt
    rt.backend.close()


def _kind(value: object) -> str:
    """The class of a collaborator by name (botocore builds a new client class per session)."""
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _public_methods(protocol: type) -> list[str]:
    return [name for name, value in vars(protocol).items() if inspect.isfunction(value) and not name.startswith("_")]


def test_a_runtime_is_frozen_and_a_changed_one_is_derived_with_replace(built):
    with pytest.raises(FrozenInstanceError):
        built.s3 = None  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        built.poll_seconds = 0.1  # type: ignore[misc]
    quick = replace(built, poll_seconds=0.1)
    assert (quick.poll_seconds, built.poll_seconds) == (0.1, built.settings.monitor_poll_seconds)
    assert quick.jobs is built.jobs and quick.backend is built.backend
    assert not hasattr(built, "restart_job")  # the reaper that used it is gone


def test_runtime_from_settings_builds_the_local_collaborators(built, local_settings, moto_endpoint):
    assert built.settings == local_settings
    assert isinstance(built.jobs, JobStore) and isinstance(built.ledger, EmbeddedLedger)
    assert isinstance(built.history, MarketHistoryStore) and isinstance(built.throughput, ThroughputStore)
    assert isinstance(built.market, AwsMarket) and isinstance(built.backend, LocalBackend)
    assert built.s3.meta.service_model.service_name == "s3" and built.s3.meta.endpoint_url == moto_endpoint
    assert (built.image_id, built.trainer_python, built.imds_endpoint, built.poll_seconds) == \
        (local_settings.image_id, "python3", None, local_settings.monitor_poll_seconds)
    # the classmethod flows call is the same construction
    again = Runtime.from_settings(local_settings)
    try:
        assert {k: _kind(v) for k, v in vars(again).items()} == {k: _kind(v) for k, v in vars(built).items()}
    finally:
        again.backend.close()


def test_the_embedded_runtime_has_the_same_kinds_of_collaborators(built, tmp_path, moto_endpoint):
    embedded = local_runtime(moto_endpoint, tmp_path / "embedded", market=built.market, bucket="runtime-jobs")
    try:
        for name in ("jobs", "ledger", "history", "throughput", "backend", "s3"):
            assert _kind(getattr(embedded, name)) == _kind(getattr(built, name)), name
        assert embedded.settings.bucket == "runtime-jobs" and embedded.settings.home == tmp_path / "embedded"
    finally:
        embedded.backend.close()


def test_stores_only_has_the_stores_and_nothing_else(local_settings):
    rt = stores_only(local_settings)
    assert isinstance(rt.jobs, JobStore) and isinstance(rt.ledger, EmbeddedLedger)
    assert (rt.s3, rt.market, rt.backend, rt.history, rt.throughput) == (None, None, None, None, None)
    assert type(Runtime.stores_only(local_settings).jobs) is JobStore


def test_each_collaborator_satisfies_the_protocol_its_field_names(built):
    hints = typing.get_type_hints(Runtime)
    protocols = {"jobs": Jobs, "ledger": Ledger, "market": MarketSource | None, "backend": ComputeBackend | None,
                 "history": ZoneHistory | None, "throughput": ThroughputRecords | None}
    for name, annotation in protocols.items():
        assert hints[name] == annotation, name
        protocol = typing.get_args(annotation)[0] if typing.get_args(annotation) else annotation
        value = getattr(built, name)
        assert isinstance(value, protocol), name  # runtime_checkable: every method is there
        for method in _public_methods(protocol):  # and takes what the Protocol says
            assert inspect.signature(getattr(type(value), method)) == inspect.signature(getattr(protocol, method)), \
                f"{type(value).__name__}.{method}"
    assert all(callable(getattr(built.s3, call)) for call in S3_CALLS)


def test_the_s3_field_is_typed_by_the_boto3_stubs():
    import blocks.runtime

    source = inspect.getsource(blocks.runtime)
    assert "from mypy_boto3_s3 import S3Client" in source and "s3: S3Client | None" in source
    from mypy_boto3_s3 import S3Client

    assert all(hasattr(S3Client, call) for call in S3_CALLS)


def test_flows_take_the_runtime_they_are_given(built):
    """Prefect validates a flow's parameters: the frozen Runtime passes through as itself."""
    import flows.runtime
    from flows.fleet import fleet
    from flows.train_job import train_job

    assert flows.runtime.Runtime is Runtime
    assert train_job.validate_parameters({"job_id": "job-1", "runtime": built})["runtime"] is built
    assert fleet.validate_parameters({"runtime": built})["runtime"] is built
