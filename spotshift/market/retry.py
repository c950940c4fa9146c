"""One AWS call with botocore errors mapped to typed errors and throttling retried with backoff."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from spotshift.aws.errors import Throttled, map_client_error
from spotshift.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a throttled call is retried (delay doubles, capped)."""

    max_attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(max_attempts=settings.aws_max_attempts, base_delay_s=settings.aws_retry_base_delay_s)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))


def call_aws(
    fn: Callable[..., T],
    *,
    region: str,
    retry: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    **kwargs: Any,
) -> T:
    """fn(**kwargs); a ClientError becomes a typed SpotshiftAwsError; Throttled is retried."""
    attempt = 1
    while True:
        try:
            return fn(**kwargs)
        except ClientError as exc:
            err = map_client_error(exc, region=region)
            if not isinstance(err, Throttled) or attempt >= retry.max_attempts:
                raise err from exc
        sleep(retry.delay(attempt))
        attempt += 1


def paginate_aws(client: Any, operation: str, *, region: str, retry: RetryPolicy,
                 sleep: Callable[[float], None] = time.sleep, **kwargs: Any) -> list[dict]:
    """Every page of a paginated operation, each page fetched through call_aws."""
    method = getattr(client, operation)
    pages, token = [], None
    while True:
        page = call_aws(method, region=region, retry=retry, sleep=sleep,
                        **kwargs, **({"NextToken": token} if token else {}))
        pages.append(page)
        token = page.get("NextToken")
        if not token:
            return pages
