"""Shared fixtures: a moto server on 127.0.0.1 (the stand-in for AWS), traces, offline settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from deployments.local_aws import client, moto_server  # noqa: E402

pytest_plugins = ["tests.aws_call_recorder"]  # every AWS call checked against the printed policies

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO.parent / "shared" / "traces"


@pytest.fixture(scope="session")
def prefect_api():
    """One Prefect API for the session's flow tests (a test harness costs ~30 s to start): the
    flow tests share it, and their xdist_group keeps them on one worker."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def job_events(monkeypatch):
    """Prefect's test double for the events client, AssertingPassthroughEventsClient, installed as
    Prefect's own `asserting_and_emitting_events_worker` fixture does: every event the flow emits is
    recorded and still sent to the session's test server (use with prefect_api). Yields a function
    that drains the worker and returns the spotshift.job.* events (tasks/events.py), in the order sent."""
    from prefect.events.clients import AssertingPassthroughEventsClient
    from prefect.events.worker import EventsWorker

    AssertingPassthroughEventsClient.reset()
    worker = EventsWorker.instance(AssertingPassthroughEventsClient)
    monkeypatch.setattr(EventsWorker, "instance", lambda *_: worker)

    def sent():
        worker.drain()
        return [e for client in AssertingPassthroughEventsClient.all for e in client.events
                if e.event.startswith("spotshift.job.")]

    yield sent
    worker.drain()


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    """One moto server (EC2, S3, ...) for the test session, on a free port of 127.0.0.1."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws_env(moto_endpoint, monkeypatch) -> str:
    """Point boto3 (and subprocesses) at the moto server with dummy credentials."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return moto_endpoint


@pytest.fixture
def s3(moto_endpoint):
    return client("s3", moto_endpoint)


@pytest.fixture
def bucket(s3, request) -> str:
    """A fresh, empty bucket per test."""
    import uuid

    name = f"test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def traces_dir() -> Path:
    if not TRACES.is_dir():
        pytest.skip(f"real spot traces not found at {TRACES} (they live in ../shared/traces beside the checkout)")
    return TRACES


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> tuple[Path, Path]:
    """(model_dir, dataset): a 2-layer, hidden-32 GPT-2 built locally (training.tiny_model), no Hub."""
    from training.tiny_model import build_tiny_model, write_demo_dataset

    root = tmp_path_factory.mktemp("tiny_lm")
    dataset = write_demo_dataset(root / "corpus.jsonl", lines=300, seed=0)
    return build_tiny_model(root / "model", dataset, layers=2, hidden=32, vocab_size=256), dataset


@pytest.fixture
def one_torch_thread():
    """In-process training on one thread: the test machine's cores are shared, and the trainer
    subprocesses run with OMP_NUM_THREADS=1 too (same thread count = same float results)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
