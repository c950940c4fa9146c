"""`spotshift aws setup | check | teardown | policy`: make, prove and remove what a job needs on an
AWS account (honours SPOTSHIFT_AWS_ENDPOINT_URL, so it runs against a moto server too)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from spotshift.settings import Settings, default_bucket_name, get_settings

Clients = Callable[[str, str], Any]
POLICY_CHOICES = {
    "runtime": "the orchestrator's policy while jobs run (the default): attach it as a customer-managed policy",
    "setup": "the policy of the admin who runs `spotshift aws setup` and `teardown` once",
    "trainer": "the trainer role's policy (setup writes it into the role; shown for review)",
}


def add_aws_parser(sub: Any) -> None:
    """Register `aws` and its actions on the `spotshift` parser's subcommands."""
    p = sub.add_parser("aws", help="set up, check or tear down what spotshift needs on your AWS account")
    actions = p.add_subparsers(dest="aws_action", required=True)
    for name, text in (("setup", "create the bucket, trainer role and profile, security groups (idempotent)"),
                       ("check", "read-only: can this account run a job? exit 1 if a check fails or no GPU "
                                  "quota is usable"),
                       ("teardown", "remove what setup made (the bucket only with --delete-bucket)"),
                       ("policy", "print an IAM policy: --runtime (default) for the key that runs jobs, --setup for "
                                  "the admin who runs setup/teardown, --trainer for the instances' role; works "
                                  "without AWS credentials (placeholders)")):
        a = actions.add_parser(name, help=text)
        a.add_argument("--regions", help="comma-separated regions (default: SPOTSHIFT_REGIONS)")
        a.add_argument("--bucket", help="bucket name (default: SPOTSHIFT_BUCKET, else spotshift-<account>-<region>)")
        if name in ("setup", "policy"):
            a.add_argument("--data", action="append", metavar="s3://BUCKET/PREFIX",
                           help="the user's own data jobs may read (repeatable): both roles get read there; adds to "
                                "SPOTSHIFT_DATA_PREFIXES for this run (setup prints the new value to export)")
        if name == "setup":
            a.add_argument("--dry-run", action="store_true",
                           help="read only: print what setup would create or change, change nothing")
        if name == "teardown":
            a.add_argument("--delete-bucket", action="store_true",
                           help="also delete the bucket and every object in it, if setup created it")
        if name == "policy":
            which = a.add_mutually_exclusive_group()
            for policy, text in POLICY_CHOICES.items():
                which.add_argument(f"--{policy}", dest="which", action="store_const", const=policy, help=text)
    smoke = actions.add_parser("smoke", help="prove the account works: the cheapest GPU spot instance trains a tiny "
                               "model 20 steps, is interrupted once, resumes, is terminated; prints what it cost "
                               "(exit 0 PASS, 1 FAIL, 2 refused: above the cap or not confirmed)")
    from spotshift.catalog import KNOWN_REGIONS

    smoke.add_argument("--region", required=True, choices=KNOWN_REGIONS, metavar="REGION",
                       help="the region to prove, e.g. us-east-1")
    smoke.add_argument("--max-usd", type=float, default=0.25, help="refuse when the estimate is above this (default 0.25)")
    smoke.add_argument("--yes", action="store_true", help="launch without asking")
    smoke.add_argument("--bucket", help="bucket name (default: SPOTSHIFT_BUCKET, else spotshift-<account>-<region>)")
    smoke.set_defaults(regions=None)


def settings_clients(settings: Settings) -> Clients:
    """(service, region) -> a boto3 client: boto3's credential chain (env, profile, role) and the
    settings' endpoint; no Prefect server needed to set up an account."""
    from blocks.aws import aws_credentials_from_settings

    creds = aws_credentials_from_settings(settings)
    return lambda service, region: creds.model_copy(update={"region_name": region}).get_client(service)


def _scope(args: argparse.Namespace, settings: Settings, clients: Clients, err=sys.stderr) -> tuple[str, str, list[str]]:
    """(account, bucket, regions) for this command. `policy` needs no credentials: without an
    identity (none configured, STS unreachable, refused) it prints placeholders and says so on `err`."""
    from botocore.exceptions import BotoCoreError, ClientError

    from spotshift.aws.iam import DEFAULT_BUCKET

    named = args.bucket or (settings.bucket if "bucket" in settings.model_fields_set else None)
    try:
        account = clients("sts", settings.aws_region).get_caller_identity()["Account"]
    except (BotoCoreError, ClientError) as exc:
        if args.aws_action != "policy":
            raise
        print(f"spotshift aws policy: no AWS identity ({type(exc).__name__}: {exc}); printing placeholders: "
              "account * in ARNs, ${aws:PrincipalAccount} (IAM fills in the caller's account) as the image owner"
              + ("" if named else f", bucket {DEFAULT_BUCKET} (name yours with --bucket or SPOTSHIFT_BUCKET)"), file=err)
        return "*", named or DEFAULT_BUCKET, _regions(args, settings)
    return account, named or default_bucket_name(account, settings.aws_region), _regions(args, settings)


def _regions(args: argparse.Namespace, settings: Settings) -> list[str]:
    return args.regions.split(",") if args.regions else list(settings.regions)


def run_aws(args: argparse.Namespace, *, settings: Settings | None = None, clients: Clients | None = None,
            out=sys.stdout, err=sys.stderr) -> int:
    """Run one `spotshift aws` action; the exit code."""
    settings = settings or get_settings()
    configured_data = list(settings.data_prefixes)  # setup prints the export line when --data adds to it
    settings = with_data(settings, getattr(args, "data", None))
    clients = clients or settings_clients(settings)
    account, bucket, regions = _scope(args, settings, clients, err)
    args.configured_data = configured_data
    action = {"setup": _setup, "check": _check, "teardown": _teardown, "policy": _policy,
              "smoke": _smoke}[args.aws_action]
    return action(args, settings, clients, account, bucket, regions, out)


def with_data(settings: Settings, data: list[str] | None) -> Settings:
    """The settings with --data's prefixes added to SPOTSHIFT_DATA_PREFIXES (each validated: a
    ValueError names a bad one before anything is called)."""
    from spotshift.data_prefixes import parse_data_prefixes

    if not data:
        return settings
    merged = [p.uri for p in parse_data_prefixes([*settings.data_prefixes, *data])]
    return settings.model_copy(update={"data_prefixes": merged})


def policy_document(which: str, settings: Settings, *, account: str, bucket: str) -> dict[str, Any]:
    """The `which` policy (runtime, setup or trainer) for these settings, account and bucket."""
    from spotshift.aws import iam

    data = list(getattr(settings, "data_prefixes", None) or [])  # the user's granted data prefixes, if any
    if which == "trainer":
        return iam.trainer_policy(bucket=bucket, secret_arn=hub_token_secret_arn(settings, account), data_prefixes=data)
    names = {"bucket": bucket, "trainer_role": settings.trainer_role, "instance_profile": settings.instance_profile,
             "account": account, "data_prefixes": data}
    if which == "setup":
        return iam.setup_policy(**names)
    return iam.runtime_policy(**names, image_owners=list(settings.image_owners))


def hub_token_secret_arn(settings: Settings, account: str) -> str | None:
    """The Hub-token secret's ARN as the trainer policy names it: the setting when it is an ARN,
    else the name and Secrets Manager's six random characters (what setup reads with DescribeSecret)."""
    secret = settings.hub_token_secret
    if not secret or secret.startswith("arn:"):
        return secret
    return f"arn:aws:secretsmanager:{settings.aws_region}:{account}:secret:{secret}-??????"


def _require_secret_prefix(settings: Settings) -> None:
    """Refuse a Hub-token secret outside the prefix the policies allow, before anything is touched."""
    from spotshift.aws.iam import secret_prefix_error

    problem = secret_prefix_error(settings.hub_token_secret)
    if problem:
        raise ValueError(problem)


def _policy(args, settings, clients, account, bucket, regions, out) -> int:
    which = getattr(args, "which", None) or "runtime"
    print(json.dumps(policy_document(which, settings, account=account, bucket=bucket), indent=2), file=out)
    return 0


def _setup(args, settings, clients, account, bucket, regions, out) -> int:
    from spotshift.aws import setup
    from spotshift.data_prefixes import parse_data_prefixes
    from spotshift.aws.network import NetworkChoice

    _require_secret_prefix(settings)
    networks = {r: NetworkChoice.of(settings, r) for r in regions}
    setup.region_vpcs(lambda r: clients("ec2", r), networks)  # VPC/subnet settings checked before anything is made
    home = settings.aws_region
    data = [setup.check_data_prefix(clients("s3", home), p, account=account)  # before anything is made
            for p in parse_data_prefixes(settings.data_prefixes)]
    iam = clients("iam", home)
    dry = bool(getattr(args, "dry_run", False))
    steps = [setup.ensure_spot_service_linked_role(iam, dry_run=dry),
             setup.ensure_bucket(clients("s3", home), bucket, region=home, account=account,
                                 expire_days=settings.checkpoint_expire_days, dry_run=dry)]
    secret = setup.secret_arn(clients("secretsmanager", home), settings.hub_token_secret, region=home)
    steps += setup.ensure_trainer_role(iam, settings.trainer_role, bucket=bucket, secret=secret,
                                       profile_name=settings.instance_profile, data_prefixes=settings.data_prefixes,
                                       dry_run=dry)
    steps += data
    steps += [setup.ensure_security_group(clients("ec2", r), settings.security_group, region=r, choice=networks[r],
                                          dry_run=dry)
              for r in regions]
    if dry:
        print("dry run: nothing was changed; this is what `spotshift aws setup` would do:\n", file=out)
    _print_steps(steps, out)
    if dry:
        return 1 if any(s.problems for s in steps) else 0
    print("\nThe runtime IAM policy: create it as a customer-managed policy and attach it to the user or role "
          "that runs jobs (docs/aws.md, \"The IAM policies\"; spotshift aws policy --runtime prints it again):",
          file=out)
    print(json.dumps(policy_document("runtime", settings, account=account, bucket=bucket), indent=2), file=out)
    if "bucket" not in settings.model_fields_set and not args.bucket:
        print(f"\nexport SPOTSHIFT_BUCKET={bucket}", file=out)
    far = [s for s in data if s.region not in regions]
    if far:
        print(f"\nnote: {', '.join(f'{s.name} is in {s.region}' for s in far)}, not among the job regions: the "
              "instances read it across regions (about $0.02 per GB; private subnets need a route to it)", file=out)
    if settings.data_prefixes != getattr(args, "configured_data", settings.data_prefixes):
        print(f"\nexport SPOTSHIFT_DATA_PREFIXES='{json.dumps(settings.data_prefixes)}'", file=out)
    return 1 if any(s.problems for s in steps) else 0


def _teardown(args, settings, clients, account, bucket, regions, out) -> int:
    from spotshift.aws import setup

    home = settings.aws_region
    steps = [setup.teardown_region(clients("ec2", r), settings.security_group, region=r,
                                   vpc_id=settings.network_of(r)[0]) for r in regions]
    steps += setup.teardown_role(clients("iam", home), settings.trainer_role, settings.instance_profile)
    steps.append(setup.teardown_bucket(clients("s3", home), bucket, region=home, account=account,
                                       delete_objects=args.delete_bucket))
    _print_steps(steps, out)
    return 1 if any(s.problems for s in steps) else 0


def _check(args, settings, clients, account, bucket, regions, out) -> int:
    from spotshift.aws.check import check_failures, failure_summary, quota_summary, render_rows, run_check

    _require_secret_prefix(settings)
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


def _smoke(args, settings, clients, account, bucket, regions, out) -> int:
    from deployments.smoke import SmokeOptions, run_smoke

    return run_smoke(SmokeOptions(region=args.region, max_usd=args.max_usd, yes=args.yes), settings=settings,
                     clients=clients, bucket=bucket, out=out)


def check_config(settings: Settings, bucket: str, regions: list[str]):
    from spotshift.aws.check import CheckConfig

    return CheckConfig.from_settings(settings, bucket=bucket, regions=regions)


DRY_RUN_STATUS = {"created": "would create", "updated": "would update"}


def _print_steps(steps, out) -> None:
    """One line per step, then its changes (in a dry run: what would change), notes and problems."""
    for s in steps:
        status = DRY_RUN_STATUS.get(s.status, s.status) if s.dry_run else s.status
        print(f"{status:<12} {s.resource:<20} {s.name}{'  (' + s.region + ')' if s.region else ''}", file=out)
        for change in s.changes:
            print(f"{'':<13}{change.planned() if s.dry_run else change.done()}", file=out)
        for note in s.notes:
            print(f"{'':<13}note: {note}", file=out)
        for problem in s.problems:
            print(f"{'':<13}{problem}" if problem.startswith("  ") else f"{'':<13}PROBLEM: {problem}", file=out)
