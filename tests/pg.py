"""A throwaway PostgreSQL for tests: Debian's postgresql package (installed if absent), a temp data dir,
a free port on 127.0.0.1, trust auth, stopped and removed at the end."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not installed and could not be installed here."""


def postgres_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<v>/bin, installing Debian's postgresql package if needed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        _apt_install_postgresql()
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise PostgresUnavailable("postgresql installed but no /usr/lib/postgresql/*/bin/initdb found")
    return Path(found[-1]).parent


def _apt_install_postgresql() -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PostgresUnavailable("PostgreSQL is absent and apt-get is not usable here (needs root on Debian)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "install", "-y", "-q", "postgresql"],
                ["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "postgresql"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode == 0 and cmd[1] == "install":
            return
    raise PostgresUnavailable(f"apt-get install postgresql failed: {done.stderr[-500:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_postgres() -> Iterator[str]:
    """Start a private PostgreSQL server; yield a libpq URL for its `postgres` superuser."""
    bin_dir = postgres_bin_dir()
    root = Path(tempfile.mkdtemp(prefix="spotshift-pg-"))
    data = root / "data"
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    run = lambda *args: subprocess.run([*as_postgres, *args], capture_output=True, text=True, timeout=120)  # noqa: E731
    try:
        init = run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        if init.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {init.stderr[-500:]}")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        start = run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
        if start.returncode != 0:
            raise PostgresUnavailable(f"pg_ctl start failed: {start.stderr[-500:]}")
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
