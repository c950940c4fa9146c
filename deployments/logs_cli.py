"""`spotshift logs JOB [--instance ID] [--follow]`: a job's instance log as its user-data uploads it to
S3 (boot, install, trainer): every minute while the instance runs, and at its exit. --follow polls
for what was appended (every 10 s: a hung boot shows within about 70 s), moves on to a newer
instance's log after a migration, and ends once the job has ended and its last log is printed."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, TextIO

FOLLOW_INTERVAL_S = 10.0


def add_logs_parser(sub) -> None:
    p = sub.add_parser("logs", help="a job's instance log from S3 (boot, install, trainer); --follow keeps printing")
    p.add_argument("job_id")
    p.add_argument("--instance", help="this instance's log (default: the newest)")
    p.add_argument("--follow", "-f", action="store_true", help="print what is appended until the job ends")
    p.add_argument("--interval", type=float, default=FOLLOW_INTERVAL_S, help="seconds between polls (default 10)")


def run_logs(args: argparse.Namespace, *, jobs=None, s3=None, bucket: str | None = None, out: TextIO | None = None,
             err: TextIO | None = None, sleep: Callable[[float], None] = time.sleep) -> int:
    """0 when a log was printed; 1 when the job has none (yet, without --follow)."""
    from spotshift.aws.job_logs import job_logs, read_from

    out, err = out or sys.stdout, err or sys.stderr
    if args.interval <= 0:
        raise ValueError(f"--interval must be a positive number of seconds, got {args.interval}")
    jobs, s3, bucket = _defaults(jobs, s3, bucket)
    paths = jobs.get(args.job_id).paths(bucket)
    printed: dict[str, int] = {}
    current, last_pass = None, False
    while True:
        logs = [log for log in job_logs(s3, paths) if args.instance in (None, log.instance_id)]
        if logs and logs[-1].key != current:
            if current is not None:
                out.write(f"\n==> {logs[-1].instance_id} (a newer instance) <==\n")
            current = logs[-1].key
        if current is not None:
            data = read_from(s3, paths.bucket, current, printed.get(current, 0))
            printed[current] = printed.get(current, 0) + len(data)
            out.write(data.decode("utf-8", errors="replace"))
            out.flush()
        if not args.follow or last_pass:
            break
        if jobs.get(args.job_id).status.terminal:
            last_pass = True  # one more read: the instance's last upload may land just after the job ended
        sleep(args.interval)
    if current is None:
        which = f"instance {args.instance}" if args.instance else "any instance"
        err.write(f"no log of {which} under s3://{paths.bucket}/{paths.key('logs/')} yet: an instance uploads "
                  "its log a minute after it boots (the local backend keeps its logs in SPOTSHIFT_HOME/instances/)\n")
        return 1
    return 0


def _defaults(jobs, s3, bucket):
    if jobs is not None and s3 is not None and bucket is not None:
        return jobs, s3, bucket
    from deployments.aws_cli import settings_clients
    from flows.runtime import Runtime
    from spotshift.settings import bucket_name, get_settings

    settings = get_settings()
    clients = settings_clients(settings)
    account = lambda: clients("sts", settings.aws_region).get_caller_identity()["Account"]  # noqa: E731
    return (jobs or Runtime.stores_only(settings).jobs, s3 or clients("s3", settings.aws_region),
            bucket or bucket_name(settings, account))
