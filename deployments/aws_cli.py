"""`spotshift aws setup | check | teardown | policy`: make, prove and remove what a job needs on an
AWS account (honours SPOTSHIFT_AWS_ENDPOINT_URL, so it runs against a moto server too)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from spotshift.settings import Settings, default_bucket_name, get_settings

Clients = Callable[[str, str], Any]


def add_aws_parser(sub: Any) -> None:
    """Register `aws` and its actions on the `spotshift` parser's subcommands."""
    p = sub.add_parser("aws", help="set up, check or tear down what spotshift needs on your AWS account")
    actions = p.add_subparsers(dest="aws_action", required=True)
    for name, text in (("setup", "create the bucket, trainer role and profile, security groups (idempotent)"),
                       ("check", "read-only: can this account run a job? exit 1 if a check fails or no GPU "
                                  "quota is usable"),
                       ("teardown", "remove what setup made (the bucket only with --delete-bucket)"),
                       ("policy", "print the orchestrator's IAM policy")):
        a = actions.add_parser(name, help=text)
        a.add_argument("--regions", help="comma-separated regions (default: SPOTSHIFT_REGIONS)")
        a.add_argument("--bucket", help="bucket name (default: SPOTSHIFT_BUCKET, else spotshift-<account>-<region>)")
        if name == "teardown":
            a.add_argument("--delete-bucket", action="store_true", help="also delete the bucket and every object in it")


def settings_clients(settings: Settings) -> Clients:
    """(service, region) -> a boto3 client: boto3's credential chain (env, profile, role) and the
    settings' endpoint; no Prefect server needed to set up an account."""
    from blocks.aws import aws_credentials_from_settings

    creds = aws_credentials_from_settings(settings)
    return lambda service, region: creds.model_copy(update={"region_name": region}).get_client(service)


def _scope(args: argparse.Namespace, settings: Settings, clients: Clients) -> tuple[str, str, list[str]]:
    """(account, bucket, regions) for this command."""
    account = clients("sts", settings.aws_region).get_caller_identity()["Account"]
    bucket = args.bucket or (settings.bucket if "bucket" in settings.model_fields_set
                             else default_bucket_name(account, settings.aws_region))
    regions = args.regions.split(",") if args.regions else list(settings.regions)
    return account, bucket, regions


def run_aws(args: argparse.Namespace, *, settings: Settings | None = None, clients: Clients | None = None,
            out=sys.stdout) -> int:
    """Run one `spotshift aws` action; the exit code."""
    settings = settings or get_settings()
    clients = clients or settings_clients(settings)
    account, bucket, regions = _scope(args, settings, clients)
    action = {"setup": _setup, "check": _check, "teardown": _teardown, "policy": _policy}[args.aws_action]
    return action(args, settings, clients, account, bucket, regions, out)


def _policy(args, settings, clients, account, bucket, regions, out) -> int:
    from spotshift.aws.iam import orchestrator_policy

    print(json.dumps(orchestrator_policy(bucket=bucket, trainer_role=settings.trainer_role,
                                         instance_profile=settings.instance_profile, account=account),
                     indent=2), file=out)
    return 0


def _setup(args, settings, clients, account, bucket, regions, out) -> int:
    from spotshift.aws import setup

    home = settings.aws_region
    iam = clients("iam", home)
    steps = [setup.ensure_spot_service_linked_role(iam),
             setup.ensure_bucket(clients("s3", home), bucket, region=home, account=account,
                                 expire_days=settings.checkpoint_expire_days)]
    secret = setup.secret_arn(clients("secretsmanager", home), settings.hub_token_secret, region=home)
    steps += setup.ensure_trainer_role(iam, settings.trainer_role, bucket=bucket, secret=secret,
                                       profile_name=settings.instance_profile)
    steps += [setup.ensure_security_group(clients("ec2", r), settings.security_group, region=r) for r in regions]
    _print_steps(steps, out)
    print(f"\nThe orchestrator's IAM policy (attach it to the user or role that runs spotshift; "
          f"docs/iam/orchestrator-policy.json):", file=out)
    _policy(args, settings, clients, account, bucket, regions, out)
    if "bucket" not in settings.model_fields_set and not args.bucket:
        print(f"\nexport SPOTSHIFT_BUCKET={bucket}", file=out)
    return 0


def _teardown(args, settings, clients, account, bucket, regions, out) -> int:
    from spotshift.aws import setup

    home = settings.aws_region
    steps = [setup.teardown_region(clients("ec2", r), settings.security_group, region=r) for r in regions]
    steps += setup.teardown_role(clients("iam", home), settings.trainer_role, settings.instance_profile)
    steps.append(setup.teardown_bucket(clients("s3", home), bucket, region=home, account=account,
                                       delete_objects=args.delete_bucket))
    _print_steps(steps, out)
    return 0


def _check(args, settings, clients, account, bucket, regions, out) -> int:
    from spotshift.aws.check import check_failures, failure_summary, quota_summary, render_rows, run_check

    rows = run_check(clients, check_config(settings, bucket, regions))
    print(render_rows(rows), file=out)
    print("\nGPU quotas (a family at quota 0 is skipped, an unknown quota is tried):", file=out)
    for line in quota_summary(rows):
        print(f"  {line}", file=out)
    failed = check_failures(rows)
    if failed:
        print(f"\n{failure_summary(failed)}", file=out)
        return 1
    print("\nall checks passed", file=out)
    return 0


def check_config(settings: Settings, bucket: str, regions: list[str]):
    from spotshift.aws.check import CheckConfig

    return CheckConfig.from_settings(settings, bucket=bucket, regions=regions)


def _print_steps(steps, out) -> None:
    for s in steps:
        print(f"{s.status:<8} {s.resource:<20} {s.name}{'  (' + s.region + ')' if s.region else ''}", file=out)
