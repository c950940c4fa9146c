"""A test double of `python -m training --spec URI` for the local backend's tests: reads the spec
from S3, writes progress.json every step, and on SIGTERM writes a marker and exits 75.

With --clock-dir it runs in lockstep with a test's virtual clock (tests/lockstep_clock.py): its steps
are a function of that clock (a changeover, then one step per --virtual-step-seconds), it resumes from
checkpoints/LATEST.json, checkpoints and exits 75 on SIGTERM or a control.json request, and it
acknowledges every instant it has acted on, so the clock never runs ahead of it."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import boto3

EXIT_DONE, EXIT_CHECKPOINTED = 0, 75
SIGTERM_MARKER = "stopped-by-sigterm.json"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True)
    parser.add_argument("--ignore-sigterm", action="store_true", help="behave like a hung trainer")
    parser.add_argument("--spawn-child", action="store_true", help="leave a grandchild in the process group")
    parser.add_argument("--step-seconds", type=float, default=0.05)
    parser.add_argument("--clock-dir", help="lockstep: read the virtual clock here, acknowledge each instant")
    parser.add_argument("--virtual-step-seconds", type=float, default=15.0,
                        help="lockstep: virtual seconds a step takes")
    parser.add_argument("--changeover-seconds", type=float, default=0.0,
                        help="lockstep: virtual seconds from start to the first finished step")
    args = parser.parse_args()
    if args.clock_dir:
        return lockstep(args)

    stop = []
    signal.signal(signal.SIGTERM, (lambda *_: None) if args.ignore_sigterm else (lambda *_: stop.append(True)))
    s3 = boto3.client("s3")  # AWS_ENDPOINT_URL and the dummy keys come from the backend's env
    bucket, key = args.spec.removeprefix("s3://").split("/", 1)
    spec = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())  # a TrainingSpec document
    max_steps = spec["max_steps"]
    out_bucket, out_prefix = spec["output"].removeprefix("s3://").split("/", 1)
    child = subprocess.Popen(["sleep", "300"]) if args.spawn_child else None

    def put(name: str, doc: dict) -> None:
        s3.put_object(Bucket=out_bucket, Key=out_prefix + name, Body=json.dumps(doc).encode())

    def progress(state: str, step: int) -> None:
        put("progress.json", {"state": state, "step": step, "max_steps": max_steps,
                              "instance_id": os.environ.get("SPOTSHIFT_INSTANCE_ID"),
                              "child_pid": child.pid if child else None,
                              "updated_at": datetime.now(UTC).isoformat()})

    step = 0
    progress("training", step)
    while step < max_steps:
        if stop:
            put(SIGTERM_MARKER, {"step": step})
            progress("checkpointed", step)
            return EXIT_CHECKPOINTED
        time.sleep(args.step_seconds)
        step += 1
        progress("training", step)
    progress("done", step)
    return EXIT_DONE


ORPHAN_WALL_S = 300.0  # lockstep: a clock that has not moved for this long belongs to a test that died


def read_clock(folder: str) -> tuple[int, float]:
    """(sequence number, virtual seconds since the epoch) of the lockstep clock."""
    while True:
        try:
            seq, now = open(os.path.join(folder, "now")).read().split()
            return int(seq), float(now)
        except (OSError, ValueError):  # between the clock's write and its rename
            time.sleep(0.001)


def acknowledge(folder: str, instance_id: str, seq: int) -> None:
    path = os.path.join(folder, f"ack-{instance_id}")
    with open(path + ".tmp", "w") as f:
        f.write(str(seq))
    os.replace(path + ".tmp", path)


def lockstep(args: argparse.Namespace) -> int:
    """Train on the test's virtual clock: the first step ends `changeover_seconds` after the first
    instant seen, then one every `virtual_step_seconds`. At each instant: the steps done by then, then
    a stop (SIGTERM or control.json) checkpoints that step and exits 75; the instant is acknowledged last."""
    stop: list[str] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append("sigterm"))
    s3 = boto3.client("s3")
    instance_id = os.environ.get("SPOTSHIFT_INSTANCE_ID", "")
    bucket, key = args.spec.removeprefix("s3://").split("/", 1)
    spec = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    max_steps = spec["max_steps"]
    out_bucket, out_prefix = spec["output"].removeprefix("s3://").split("/", 1)

    def get(name: str) -> dict | None:
        try:
            return json.loads(s3.get_object(Bucket=out_bucket, Key=out_prefix + name)["Body"].read())
        except s3.exceptions.NoSuchKey:
            return None

    def put(name: str, doc: dict) -> None:
        s3.put_object(Bucket=out_bucket, Key=out_prefix + name, Body=json.dumps(doc).encode())

    latest = get("checkpoints/LATEST.json")
    first = latest["step"] if latest else 0

    def progress(state: str, step: int, now: float, **extra) -> None:
        put("progress.json", {"state": state, "step": step, "max_steps": max_steps, "instance_id": instance_id,
                              "updated_at": datetime.fromtimestamp(now, UTC).isoformat(),
                              "resumed_from_step": first, **extra})

    seen, written, ready = None, None, None
    moved = time.monotonic()
    while True:
        seq, now = read_clock(args.clock_dir)
        if seq == seen:
            if time.monotonic() - moved > ORPHAN_WALL_S:
                return 1
            time.sleep(0.001)
            continue
        seen, moved = seq, time.monotonic()
        if ready is None:  # the first step ends at start + changeover
            ready = now + args.changeover_seconds - args.virtual_step_seconds
        trained = int((now - ready) // args.virtual_step_seconds) if now >= ready else 0
        step = min(max_steps, first + trained)
        if step >= max_steps:
            progress("done", step, now)
            acknowledge(args.clock_dir, instance_id, seq)
            return EXIT_DONE
        if (step, "starting" if step == first else "training") != written:
            written = (step, "starting" if step == first else "training")
            progress(written[1], step, now)
        control = get("control.json")
        if stop or control:
            put("checkpoints/LATEST.json", {"step": step, "files": [],
                                            "created_at": datetime.fromtimestamp(now, UTC).isoformat()})
            progress("checkpointed", step, now, last_checkpoint_step=step,
                     honoured_request_id=control["request_id"] if control else None,
                     stop_reason="control" if control else "sigterm")
            acknowledge(args.clock_dir, instance_id, seq)
            return EXIT_CHECKPOINTED
        acknowledge(args.clock_dir, instance_id, seq)


if __name__ == "__main__":
    sys.exit(main())
