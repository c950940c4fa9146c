"""AWS credentials: prefect-aws AwsCredentials, built from settings when no block is saved."""

from __future__ import annotations

from prefect_aws import AwsCredentials
from prefect_aws.client_parameters import AwsClientParameters

from spotshift.settings import Settings

DEFAULT_BLOCK_NAME = "spotshift"


def aws_credentials_from_settings(settings: Settings) -> AwsCredentials:
    """AwsCredentials for settings' region and endpoint (a moto server when aws_endpoint_url is set).

    Keys come from boto3's usual chain (env, profile, instance role): none are copied into the block.
    Get clients with `get_client("ec2")` / `get_s3_client()`: they honour the endpoint, unlike
    `get_boto3_session().client(...)`.
    """
    return AwsCredentials(
        region_name=settings.aws_region,
        aws_client_parameters=AwsClientParameters(
            endpoint_url=settings.aws_endpoint_url,
            config={"retries": {"mode": "standard", "total_max_attempts": settings.aws_max_attempts}}),
    )


def load_aws_credentials(settings: Settings, block_name: str | None = DEFAULT_BLOCK_NAME) -> AwsCredentials:
    """The saved AwsCredentials block `block_name` if there is one, else one built from settings."""
    if block_name is not None:
        try:
            return AwsCredentials.load(block_name)
        except ValueError:  # Prefect raises ValueError when no such block document exists
            pass
    return aws_credentials_from_settings(settings)
