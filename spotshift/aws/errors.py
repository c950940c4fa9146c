"""botocore error codes mapped once to typed errors; callers catch these, never ClientError.

Messages keep the error code, the operation and the region, never credentials.
"""

from __future__ import annotations

import re

from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError

CAPACITY_CODES = frozenset({
    "InsufficientInstanceCapacity",
    "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity",
    "InsufficientCapacityOnHost",
    "InsufficientCapacity",
    "SpotMaxPriceTooLow",
    "MaxSpotInstanceCountExceeded",
    "MaxSpotFleetRequestCountExceeded",
    "InstanceLimitExceeded",
    "VcpuLimitExceeded",
    "ReservationCapacityExceeded",
    "Unsupported",
    "UnsupportedOperation",
})
# Account quotas: the whole region's market is out, not just one zone.
QUOTA_CODES = frozenset({
    "MaxSpotInstanceCountExceeded", "MaxSpotFleetRequestCountExceeded", "InstanceLimitExceeded", "VcpuLimitExceeded",
})
THROTTLING_CODES = frozenset({
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "EC2ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
    "PriorRequestNotComplete",
    "ProvisionedThroughputExceededException",
    "BandwidthLimitExceeded",
})
PERMISSION_CODES = frozenset({
    "UnauthorizedOperation",
    "AccessDenied",
    "AccessDeniedException",
    "AuthFailure",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "OptInRequired",
    "Blocked",
    "PendingVerification",
})
NOT_FOUND_CODES = frozenset({
    "NotFound", "404", "NoSuchBucket", "NoSuchKey", "NoSuchEntity", "ResourceNotFoundException", "ParameterNotFound",
    "NoSuchResourceException",  # Service Quotas: e.g. no applied value for a quota code (ask for the AWS default)
})
INVALID_REQUEST_CODES = frozenset({
    "InvalidParameterValue",
    "InvalidParameterCombination",
    "InvalidParameter",
    "MissingParameter",
    "UnknownParameter",
    "ValidationError",
    "ValidationException",
    "InvalidRequest",
    "InvalidInput",
    "IdempotentParameterMismatch",
    "InvalidBlockDeviceMapping",
    "InvalidUserData.Malformed",
    "IllegalArgumentException",  # Service Quotas
})
# The endpoint does not implement the API at all (an AWS-compatible endpoint such as moto, or an API
# the service lacks there). UnsupportedOperation stays a capacity code: EC2 uses it for launches.
NOT_IMPLEMENTED_CODES = frozenset({"InvalidAction", "NotImplemented", "UnknownOperationException"})

# Anything that looks like an AWS access key id or a long secret-ish token is cut from messages.
_SECRET_LIKE = re.compile(r"\b(?:AKIA|ASIA|AROA|AIDA)[A-Z0-9]{12,}\b|[A-Za-z0-9/+=]{40,}")
_MAX_MESSAGE = 300


class SpotshiftAwsError(Exception):
    """An AWS call failed. `code` is the AWS error code, `operation` the API call, `region` where."""

    retryable = False

    def __init__(self, message: str, *, code: str = "", operation: str = "", region: str = "", context: str = ""):
        self.code = code
        self.operation = operation
        self.region = region
        self.context = context
        self.aws_message = message
        where = " ".join(p for p in (f"{operation}" if operation else "", f"in {region}" if region else "") if p)
        head = f"{context}: " if context else ""
        super().__init__(f"{head}{code or 'error'}{' on ' + where if where else ''}: {message}")


class CapacityUnavailable(SpotshiftAwsError):
    """No capacity or no quota for this offer now: blocklist it and take the next one."""

    @property
    def is_quota(self) -> bool:
        """True when an account limit (not the zone's capacity) refused: the region's market is out."""
        return self.code in QUOTA_CODES


class QuotaExceeded(CapacityUnavailable):
    """An account vCPU quota refused the launch: every offer of the region, quota group (G or P)
    and market is out until the quota is raised. `quota_code` names it in Service Quotas."""

    def __init__(self, message: str, *, quota_code: str = "", quota_name: str = "", **kwargs):
        self.quota_code = quota_code
        self.quota_name = quota_name
        named = f"quota {quota_name} ({quota_code}) is too low: {message}" if quota_code else message
        super().__init__(named, **kwargs)

    @property
    def is_quota(self) -> bool:
        return True


class ImageUnavailable(CapacityUnavailable):
    """The region's image cannot be launched (missing, not shared, wrong architecture): block the
    offer and take the next one; `spotshift aws check` says how to fix the image."""


class Throttled(SpotshiftAwsError):
    """AWS asked us to slow down: retry with backoff."""

    retryable = True


class PermissionDenied(SpotshiftAwsError):
    """The credentials or the IAM policy do not allow the call: fail fast, tell the user."""


class NotFound(SpotshiftAwsError):
    """The instance, image, bucket or key does not exist."""


class InvalidRequest(SpotshiftAwsError):
    """The request itself is wrong (a parameter, a combination): a bug or bad input, not retryable."""


class OperationUnsupported(InvalidRequest):
    """The endpoint does not implement this API (an error code saying so, or an answer that is not the
    API's format at all): skip what needs it and say so; retrying does not help."""


class WaitTimeout(SpotshiftAwsError):
    """A resource did not reach the wanted state in time."""


IMAGE_CODE_PREFIX = "InvalidAMIID."


def error_class(code: str) -> type[SpotshiftAwsError]:
    """The typed error for an AWS error code (SpotshiftAwsError when the code is unknown)."""
    if code.startswith(IMAGE_CODE_PREFIX):
        return ImageUnavailable
    if code in CAPACITY_CODES:
        return CapacityUnavailable
    if code in THROTTLING_CODES:
        return Throttled
    if code in PERMISSION_CODES:
        return PermissionDenied
    if code in NOT_IMPLEMENTED_CODES:
        return OperationUnsupported
    if code in NOT_FOUND_CODES or code.endswith((".NotFound", "NotFoundException")):
        return NotFound
    if code in INVALID_REQUEST_CODES or code.endswith((".Malformed", ".Invalid")) or code.startswith("Invalid"):
        return InvalidRequest
    return SpotshiftAwsError


def redact(message: str) -> str:
    """The AWS message with anything credential-like removed and its length capped."""
    cleaned = _SECRET_LIKE.sub("<redacted>", message)
    return cleaned if len(cleaned) <= _MAX_MESSAGE else cleaned[:_MAX_MESSAGE] + "..."


def map_client_error(exc: ClientError, *, context: str = "", region: str = "") -> SpotshiftAwsError:
    """The typed error for a botocore ClientError; raise it `from exc`.

    Only the error code and a redacted message are kept from the response (never the request,
    its headers or signature fields, which S3 echoes back on auth errors).
    """
    error = exc.response.get("Error", {}) or {}
    code = str(error.get("Code", "") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    message = redact(str(error.get("Message", "") or ""))
    return error_class(code)(message, code=code, operation=exc.operation_name or "", region=region, context=context)


def map_parser_error(exc: ResponseParserError, *, operation: str, region: str = "") -> OperationUnsupported:
    """An answer botocore cannot parse as `operation`'s response (moto answers an API it lacks with an
    HTML 500 page) as OperationUnsupported; raise it `from exc`. Only the first line of the message is
    kept (the rest echoes the body)."""
    first_line = (str(exc).splitlines() or ["unparseable response"])[0].split(". Further retries")[0]
    return OperationUnsupported(redact(first_line), code="UnparseableResponse", operation=operation, region=region)
