"""A test double of `python -m training --spec URI` for the local backend's tests: reads the spec
from S3, writes progress.json every step, and on SIGTERM writes a marker and exits 75."""

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
    args = parser.parse_args()

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


if __name__ == "__main__":
    sys.exit(main())
