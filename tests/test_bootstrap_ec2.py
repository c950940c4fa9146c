"""training.bootstrap on EC2: the trainer learns its instance id from IMDSv2, and the machine
powers off when the trainer exits (only when asked: the script must run safely anywhere else)."""

from __future__ import annotations

import http.server
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from training.bootstrap import render_user_data


class FakeImds(http.server.BaseHTTPRequestHandler):
    """IMDSv2: PUT a token, then GET metadata with it."""

    def do_PUT(self):  # noqa: N802
        body = b"tok-123"
        self.send_response(200 if self.path == "/latest/api/token" else 404)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        ok = self.path == "/latest/meta-data/instance-id" and self.headers.get("X-aws-ec2-metadata-token") == "tok-123"
        self.send_response(200 if ok else 401)
        self.end_headers()
        self.wfile.write(b"i-0123456789abcdef0" if ok else b"")

    def log_message(self, *args):
        pass


@pytest.fixture
def imds():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeImds)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def stub(path: Path, body: str) -> None:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_instance_id_from_imdsv2_and_power_off_after_the_trainer(imds, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub(bin_dir / "python3", f'if [ "$2" = torch.distributed.run ]; then printf %s "$SPOTSHIFT_INSTANCE_ID" > {tmp_path}/id; exit 75; fi\n')
    stub(bin_dir / "shutdown", f'echo "$@" > {tmp_path}/shutdown\n')  # never the real one
    script = render_user_data("s3://b/jobs/j/spec.json", log_file=str(tmp_path / "log"), imds=imds, power_off=True)
    run = subprocess.run(["bash", "-c", script], env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, capture_output=True,
                         text=True, timeout=30)
    assert run.returncode == 75
    assert (tmp_path / "id").read_text() == "i-0123456789abcdef0"
    assert (tmp_path / "shutdown").read_text().strip() == "-h now"


def test_by_default_the_script_neither_calls_imds_nor_powers_off():
    script = render_user_data("s3://b/jobs/j/spec.json")
    assert "shutdown" not in script and "169.254" not in script and "meta-data" not in script
