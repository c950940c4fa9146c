"""The `spotshift` command: submit | estimate | status | jobs | logs | approve | cancel | demo | serve | api | blocks."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spotshift", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("submit", help="submit a training job (JSON file or flags)")
    s.add_argument("--file", help="a JSON JobCreate; flags below override its fields")
    s.add_argument("--model")
    s.add_argument("--dataset")
    s.add_argument("--max-steps", type=int)
    s.add_argument("--budget-usd", type=float)
    s.add_argument("--deadline-hours", type=float, help="deadline this many hours from now")
    s.add_argument("--regions", help="comma-separated AWS regions")
    s.add_argument("--instance-types", help="comma-separated instance types")
    s.add_argument("--idempotency-key")
    s.add_argument("--run", choices=["deployment", "inline", "none"], default="deployment",
                   help="start the train-job deployment (default), run the flow here, or only store the job")

    st = sub.add_parser("status", help="one job's status, workloads and cost")
    st.add_argument("job_id")
    j = sub.add_parser("jobs", help="list jobs")
    j.add_argument("--status")
    a = sub.add_parser("approve", help="answer the approval a job's flow run waits for")
    a.add_argument("job_id")
    a.add_argument("--reject", action="store_true")
    a.add_argument("--comment", default="")
    d = sub.add_parser("demo", help="run the demo job end to end on the embedded defaults")
    d.add_argument("--speedup", type=float, default=60.0, help="market minutes per wall second (default 60)")
    d.add_argument("--max-steps", type=int, default=300)
    sub.add_parser("serve", help="serve the train-job, fleet, job-action, continuous-scout and migrate-job deployments (no worker needed)")
    b = sub.add_parser("blocks", help="Prefect blocks")
    b.add_argument("action", choices=["register"])
    from deployments.aws_cli import add_aws_parser  # spotshift aws setup|check|teardown|policy (issue 11)

    add_aws_parser(sub)
    from deployments.http.commands import add_api_commands

    add_api_commands(sub)  # api [--host --port], api token create|revoke, cancel (issue 15)
    from deployments.estimate_cli import add_estimate_parser

    add_estimate_parser(sub)  # estimate --file job.json [--json] (issue 12)
    from deployments.logs_cli import add_logs_parser

    add_logs_parser(sub)  # logs JOB [--instance ID] [--follow] (issue 20.7)
    return p


def _job_create(args):
    from spotshift.models import JobCreate

    data = json.loads(open(args.file).read()) if args.file else {}
    for field in ("model", "dataset", "max_steps", "budget_usd", "idempotency_key"):
        value = getattr(args, field)
        if value is not None:
            data[field] = value
    if args.deadline_hours is not None:
        data["deadline"] = (datetime.now(UTC) + timedelta(hours=args.deadline_hours)).isoformat()
    if args.regions:
        data["regions"] = args.regions.split(",")
    if args.instance_types:
        data["instance_types"] = args.instance_types.split(",")
    return JobCreate.model_validate(data)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from deployments import api
    from spotshift.aws.errors import SpotshiftAwsError
    from spotshift.stores import InvalidTransition, JobNotFound

    try:
        if args.command == "submit":
            print(api.submit(_job_create(args), run=args.run,  # an EC2 job's local inputs are uploaded first
                             on_upload=lambda upload: print(upload.describe(), file=sys.stderr)))
        elif args.command == "status":
            print(json.dumps(api.status(args.job_id), indent=2))
        elif args.command == "jobs":
            from spotshift.models import JobStatus

            for job in api.list_jobs(JobStatus(args.status) if args.status else None):
                print(f"{job.id}\t{job.status}\t{job.step}/{job.request.max_steps}\t${job.cost_usd:.2f}")
        elif args.command == "approve":
            run_id = api.approve(args.job_id, reject=args.reject, comment=args.comment)
            print(f"{'rejected' if args.reject else 'approved'}: flow run {run_id} resumed")
        elif args.command == "demo":
            from deployments.demo import DemoOptions, run_demo

            summary = run_demo(DemoOptions(speedup=args.speedup, max_steps=args.max_steps))
            return 0 if summary["status"] == "succeeded" else 1
        elif args.command == "serve":
            from deployments.serve import serve_all

            serve_all()
        elif args.command == "aws":
            from deployments.aws_cli import run_aws

            return run_aws(args)
        elif args.command == "logs":
            from deployments.logs_cli import run_logs

            return run_logs(args)
        elif args.command == "estimate":
            from deployments.estimate_cli import run_estimate

            return run_estimate(args)
        elif args.command in ("api", "cancel"):
            from deployments.http.commands import run_api_command

            return run_api_command(args)
        elif args.command == "blocks":
            from blocks.register import register_blocks
            from spotshift.settings import get_settings

            for kind, name in register_blocks(get_settings()).items():
                print(f"saved {kind} block {name!r}")
    except ValidationError as exc:
        print(f"invalid input:\n{exc}", file=sys.stderr)
        return 2
    except SpotshiftAwsError as exc:  # setup/check: the typed AWS error says what failed and where
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, KeyError, JobNotFound, InvalidTransition) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
