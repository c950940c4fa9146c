"""A moto server on 127.0.0.1: the embedded stand-in for AWS (EC2 + S3) used by tests and the demo."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator

import boto3

# moto accepts any credentials; these are dummies, never real secrets.
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@contextmanager
def moto_server(port: int = 0) -> Iterator[str]:
    """Run a ThreadedMotoServer on 127.0.0.1 (port 0 = any free port); yield its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, bound = server.get_host_and_port()
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.stop()


@contextmanager
def moto_server_process(timeout_s: float = 60.0, nice: int = 0) -> Iterator[str]:
    """A moto server in its own process on 127.0.0.1 (its CPU work does not share this process's
    GIL, as a remote endpoint would not); yield its endpoint URL. `nice` > 0 lowers its priority,
    so that on a small machine it takes CPU from the measured work only when that work is idle
    (a remote S3's CPU is not the instance's)."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=(lambda: os.nice(nice)) if nice else None)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the moto server did not start on {endpoint}") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def local_env(endpoint_url: str, region: str = "us-east-1") -> dict[str, str]:
    """Environment for a process (a local trainer, a test) that talks to the moto server."""
    return {
        **FAKE_CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_DEFAULT_REGION": region,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def client(service: str, endpoint_url: str, region: str = "us-east-1"):
    """A boto3 client bound to the moto server (dummy credentials)."""
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def ensure_bucket(endpoint_url: str, bucket: str, region: str = "us-east-1") -> None:
    s3 = client("s3", endpoint_url, region)
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)


def apply_env(endpoint_url: str, region: str = "us-east-1") -> None:
    os.environ.update(local_env(endpoint_url, region))
