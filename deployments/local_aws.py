"""A moto server on 127.0.0.1: the embedded stand-in for AWS (EC2 + S3) used by tests and the demo.
Its clients and environment are in spotshift.aws.moto_env (re-exported here)."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator

from spotshift.aws.moto_env import FAKE_CREDENTIALS, apply_env, client, ensure_bucket, local_env

__all__ = ["FAKE_CREDENTIALS", "apply_env", "client", "ensure_bucket", "local_env", "moto_server",
           "moto_server_process"]


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
def moto_server_process(timeout_s: float = 60.0, nice: int = 0, env: dict[str, str] | None = None) -> Iterator[str]:
    """A moto server in its own process on 127.0.0.1 (its CPU work does not share this process's
    GIL, as a remote endpoint would not); yield its endpoint URL. `nice` > 0 lowers its priority,
    so that on a small machine it takes CPU from the measured work only when that work is idle
    (a remote S3's CPU is not the instance's). `env` adds moto settings to the server's environment
    (e.g. INITIAL_NO_AUTH_ACTION_COUNT, MOTO_ENABLE_AMI_VALIDATION)."""
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
                            env={**os.environ, **env} if env else None,
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
