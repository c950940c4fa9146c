"""One AWS call with botocore errors mapped to typed errors. Retries belong to botocore: every
client is built with `retry_config` (standard mode: throttling and transient errors, backed off)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from botocore.config import Config
from botocore.exceptions import ClientError

from spotshift.aws.errors import map_client_error

T = TypeVar("T")
DEFAULT_MAX_ATTEMPTS = 5


def retry_config(max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> Config:
    """botocore's standard retry mode: throttling and transient errors retried with backoff, up to
    `max_attempts` attempts per call. The only place spotshift retries an AWS call."""
    return Config(retries={"mode": "standard", "total_max_attempts": max_attempts})


def call_aws(fn: Callable[..., T], *, region: str, **kwargs: Any) -> T:
    """fn(**kwargs); a ClientError (after botocore's retries) becomes a typed SpotshiftAwsError."""
    try:
        return fn(**kwargs)
    except ClientError as exc:
        raise map_client_error(exc, region=region) from exc


def paginate_aws(client: Any, operation: str, *, region: str, **kwargs: Any) -> list[dict]:
    """Every page of a paginated operation, each page fetched through call_aws."""
    method = getattr(client, operation)
    pages, token = [], None
    while True:
        page = call_aws(method, region=region, **kwargs, **({"NextToken": token} if token else {}))
        pages.append(page)
        token = page.get("NextToken")
        if not token:
            return pages
