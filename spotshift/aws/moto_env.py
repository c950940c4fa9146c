"""Clients and environment for the embedded AWS stand-in (a moto server on 127.0.0.1): dummy
credentials only, never real secrets."""

from __future__ import annotations

import os

import boto3

from spotshift.aws.calls import retry_config

# moto accepts any credentials; these are dummies, never real secrets.
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def local_env(endpoint_url: str, region: str = "us-east-1") -> dict[str, str]:
    """Environment for a process (a local trainer, a test) that talks to the moto server."""
    return {
        **FAKE_CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_DEFAULT_REGION": region,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def client(service: str, endpoint_url: str, region: str = "us-east-1", credentials: dict[str, str] | None = None):
    """A boto3 client bound to the moto server (dummy credentials, or `credentials` as
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY: an IAM user of a server that enforces IAM)."""
    creds = credentials or FAKE_CREDENTIALS
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
        config=retry_config(),
    )


def ensure_bucket(endpoint_url: str, bucket: str, region: str = "us-east-1") -> None:
    s3 = client("s3", endpoint_url, region)
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)


def apply_env(endpoint_url: str, region: str = "us-east-1") -> None:
    os.environ.update(local_env(endpoint_url, region))
