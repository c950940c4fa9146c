"""Stopping: the EC2 spot instance-action notice (IMDSv2, served locally) and control.json make the
trainer checkpoint and exit 75; an honoured control request is not honoured twice."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from training.contract import ControlRequest, read_latest, read_progress, write_control
from training.exitcodes import EXIT_CHECKPOINTED, EXIT_DONE
from training.loop import TrainerIO, run_training
from training.spec import TrainingSpec
from training.stopping import StopFlag, spot_interruption_notice
from training.storage import S3Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOKEN = "imds-token-123"


class FakeImds(BaseHTTPRequestHandler):
    """IMDSv2 on 127.0.0.1: PUT a token, then GET spot/instance-action (404 until armed)."""

    notice: dict | None = None

    def do_PUT(self):
        if self.path != "/latest/api/token" or "X-aws-ec2-metadata-token-ttl-seconds" not in self.headers:
            return self._reply(400, b"")
        self._reply(200, TOKEN.encode())

    def do_GET(self):
        if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
            return self._reply(401, b"")
        if self.path == "/latest/meta-data/spot/instance-action" and type(self).notice is not None:
            return self._reply(200, json.dumps(type(self).notice).encode())
        self._reply(404, b"")

    def _reply(self, code: int, body: bytes):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def imds():
    handler = type("Imds", (FakeImds,), {"notice": None})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def spec_for(tiny_lm, bucket: str, **overrides) -> TrainingSpec:
    model_dir, dataset = tiny_lm
    fields = dict(job_id="stop", model=str(model_dir), dataset=str(dataset), output=f"s3://{bucket}/jobs/stop/",
                  max_steps=200, batch_size=2, seq_len=32, checkpoint_every_steps=None, keep_checkpoints=2,
                  heartbeat_seconds=0.2, control_poll_seconds=0.05, min_step_seconds=0.01)
    return TrainingSpec(**(fields | overrides))


def run(spec, s3, on_step=lambda step, loss: None):
    io = TrainerIO(store=S3Store.from_uri(s3, spec.output), s3=s3, on_step=on_step)
    return run_training(spec, io, StopFlag())


def test_notice_needs_the_imdsv2_token_and_is_none_until_armed(imds):
    handler, endpoint = imds
    assert spot_interruption_notice(endpoint) is None
    handler.notice = {"action": "terminate", "time": "2026-01-01T00:02:00Z"}
    assert spot_interruption_notice(endpoint) == handler.notice


def test_unreachable_imds_is_no_notice():
    assert spot_interruption_notice("http://127.0.0.1:9", timeout_s=0.5) is None


def test_spot_notice_checkpoints_and_exits_75(imds, tiny_lm, s3, bucket):
    handler, endpoint = imds
    spec = spec_for(tiny_lm, bucket, imds_endpoint=endpoint)

    def arm_at_step_5(step, loss):
        if step == 5:
            handler.notice = {"action": "terminate", "time": "2026-01-01T00:02:00Z"}

    result = run(spec, s3, arm_at_step_5)
    assert result.exit_code == EXIT_CHECKPOINTED
    progress = read_progress(s3, spec.output)
    assert progress.state == "checkpointed" and progress.stop_reason == "spot_notice"
    assert 5 <= progress.step < spec.max_steps
    assert read_latest(s3, spec.output).step == progress.step == progress.last_checkpoint_step


def test_control_request_is_honoured_once(tiny_lm, s3, bucket):
    spec = spec_for(tiny_lm, bucket)
    request = ControlRequest(request_id="move-1", reason="cheaper zone")

    def request_at_step_3(step, loss):
        if step == 3:
            write_control(s3, spec.output, request)

    assert run(spec, s3, request_at_step_3).exit_code == EXIT_CHECKPOINTED
    stopped = read_progress(s3, spec.output)
    assert stopped.stop_reason == "control" and stopped.honoured_request_id == "move-1"
    assert read_latest(s3, spec.output).step == stopped.step >= 3

    # the resumed trainer sees the same control.json and must not stop for it again
    short = spec.model_copy(update={"max_steps": stopped.step + 10, "min_step_seconds": 0.02})
    assert run(short, s3).exit_code == EXIT_DONE
    done = read_progress(s3, spec.output)
    assert done.state == "done" and done.resumed_from_step == stopped.step
    assert done.honoured_request_id == "move-1"


def test_heartbeat_reports_progress_while_training(tiny_lm, s3, bucket):
    spec = spec_for(tiny_lm, bucket, max_steps=30, min_step_seconds=0.02, heartbeat_seconds=0.05)
    seen = []

    def watch(step, loss):
        progress = read_progress(s3, spec.output)
        if progress is not None:
            seen.append(progress)

    assert run(spec, s3, watch).exit_code == EXIT_DONE
    training = [p for p in seen if p.state == "training" and p.step > 0]
    assert training, "no heartbeat was written while training"
    beat = training[-1]
    assert beat.max_steps == 30 and beat.loss > 0 and beat.samples_per_s > 0 and beat.tokens_per_s == pytest.approx(beat.samples_per_s * 32)
    assert len({p.updated_at for p in seen}) > 1


def test_failure_sets_state_failed_with_the_reason(tiny_lm, s3, bucket, tmp_path):
    missing = tmp_path / "no-such.jsonl"
    spec = spec_for(tiny_lm, bucket, dataset=str(missing))
    result = run(spec, s3)
    assert result.exit_code == 1
    progress = read_progress(s3, spec.output)
    assert progress.state == "failed" and "no-such.jsonl" in progress.error
