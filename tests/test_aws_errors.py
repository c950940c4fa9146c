"""botocore error codes -> typed spotshift errors."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from spotshift.aws.errors import (
    CapacityUnavailable,
    ImageUnavailable,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    SpotshiftAwsError,
    Throttled,
    map_client_error,
)


def client_error(code: str, message: str = "boom", operation: str = "RunInstances", **extra) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message, **extra}}, operation)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("InsufficientInstanceCapacity", CapacityUnavailable),
        ("SpotMaxPriceTooLow", CapacityUnavailable),
        ("MaxSpotInstanceCountExceeded", CapacityUnavailable),
        ("InstanceLimitExceeded", CapacityUnavailable),
        ("VcpuLimitExceeded", CapacityUnavailable),
        ("Unsupported", CapacityUnavailable),
        ("RequestLimitExceeded", Throttled),
        ("Throttling", Throttled),
        ("ThrottlingException", Throttled),
        ("SlowDown", Throttled),
        ("UnauthorizedOperation", PermissionDenied),
        ("AccessDenied", PermissionDenied),
        ("AuthFailure", PermissionDenied),
        ("InvalidClientTokenId", PermissionDenied),
        ("InvalidInstanceID.NotFound", NotFound),
        ("InvalidAMIID.NotFound", ImageUnavailable),
        ("NoSuchEntity", NotFound),
        ("NoSuchBucket", NotFound),
        ("NoSuchResourceException", NotFound),  # Service Quotas: no applied value for the quota code
        ("IllegalArgumentException", InvalidRequest),
        ("AccessDeniedException", PermissionDenied),
        ("TooManyRequestsException", Throttled),
        ("InvalidParameterValue", InvalidRequest),
        ("InvalidAMIID.Malformed", ImageUnavailable),
        ("IdempotentParameterMismatch", InvalidRequest),
        ("SomethingNewFromAws", SpotshiftAwsError),
    ],
)
def test_each_code_maps_to_its_typed_error(code, expected):
    err = map_client_error(client_error(code))
    assert type(err) is expected
    assert err.code == code


def test_the_error_keeps_code_operation_region_and_context():
    err = map_client_error(client_error("InsufficientInstanceCapacity", "We currently do not have capacity"),
                           context="launch g5.xlarge in us-east-1b", region="us-east-1")
    assert (err.code, err.operation, err.region) == ("InsufficientInstanceCapacity", "RunInstances", "us-east-1")
    assert str(err) == ("launch g5.xlarge in us-east-1b: InsufficientInstanceCapacity on RunInstances in us-east-1: "
                        "We currently do not have capacity")


def test_only_throttling_is_retryable():
    assert map_client_error(client_error("RequestLimitExceeded")).retryable
    assert not map_client_error(client_error("InsufficientInstanceCapacity")).retryable
    assert not map_client_error(client_error("AccessDenied")).retryable


def test_quota_errors_are_told_apart_from_zone_capacity():
    assert map_client_error(client_error("VcpuLimitExceeded")).is_quota
    assert not map_client_error(client_error("InsufficientInstanceCapacity")).is_quota


def test_credentials_echoed_by_aws_never_reach_the_message():
    key_id, secret = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    exc = client_error(
        "SignatureDoesNotMatch",
        f"The request signature we calculated does not match (key {key_id}, {secret})",
        operation="PutObject",
        AWSAccessKeyId=key_id,
        StringToSign=f"AWS4-HMAC-SHA256 {secret}",
    )
    err = map_client_error(exc, region="us-east-1")
    assert isinstance(err, PermissionDenied)
    text = f"{err} {err!r} {vars(err)}"
    assert key_id not in text and secret not in text
    assert "SignatureDoesNotMatch" in text


def test_a_long_aws_message_is_capped():
    err = map_client_error(client_error("UnauthorizedOperation", "You are not authorized. " + "x " * 2000))
    assert len(str(err)) < 500
