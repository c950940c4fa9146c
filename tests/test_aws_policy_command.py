"""`spotshift aws policy` as a user runs it, in a process with no AWS credentials anywhere (no
environment keys, no config or credentials file, no instance metadata) or with STS unreachable: it
prints the policies with placeholders, says so on stderr, and with the default settings prints
exactly the documented defaults (docs/iam/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spotshift.aws.iam import trainer_policy

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(180)


def spotshift_aws_policy(tmp_path: Path, *flags: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPOTSHIFT_"))}
    clean |= {"AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
              "AWS_EC2_METADATA_DISABLED": "true", "SPOTSHIFT_HOME": str(tmp_path / "home"),
              "SPOTSHIFT_AWS_MAX_ATTEMPTS": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"} | env
    return subprocess.run([sys.executable, "-m", "deployments.cli", "aws", "policy", *flags], capture_output=True,
                          text=True, cwd=ROOT, env=clean, timeout=150)


@pytest.mark.parametrize("flags, doc", [((), "runtime"), (("--runtime",), "runtime"), (("--setup",), "setup")])
def test_without_credentials_the_defaults_print_the_documented_policy_with_placeholders(tmp_path, flags, doc):
    done = spotshift_aws_policy(tmp_path, *flags)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads((ROOT / "docs" / "iam" / f"{doc}-policy.json").read_text())
    assert "no AWS identity (NoCredentialsError" in done.stderr
    assert "account * in ARNs" in done.stderr and "bucket spotshift-*" in done.stderr


def test_with_sts_unreachable_the_named_bucket_and_secret_are_used_and_the_account_is_a_placeholder(tmp_path):
    done = spotshift_aws_policy(tmp_path, "--trainer", AWS_ACCESS_KEY_ID="AKIAEXAMPLE", AWS_SECRET_ACCESS_KEY="x",
                                SPOTSHIFT_AWS_ENDPOINT_URL="http://127.0.0.1:9", SPOTSHIFT_BUCKET="my-bucket",
                                SPOTSHIFT_AWS_REGION="eu-west-1", SPOTSHIFT_HUB_TOKEN_SECRET="spotshift/hf-token")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == trainer_policy(
        bucket="my-bucket", secret_arn="arn:aws:secretsmanager:eu-west-1:*:secret:spotshift/hf-token-??????")
    assert "no AWS identity (EndpointConnectionError" in done.stderr and "bucket spotshift-*" not in done.stderr


def test_the_policy_choices_exclude_each_other(tmp_path):
    done = spotshift_aws_policy(tmp_path, "--setup", "--runtime")
    assert done.returncode == 2 and "not allowed with argument" in done.stderr
