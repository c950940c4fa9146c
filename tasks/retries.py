"""When a Prefect task retries an AWS step: botocore already retried each call (throttling and
transient errors, standard mode); the task retries the whole step once more, after a longer pause,
only when the error is still a retryable one. Everything else is final; the flow decides."""

from __future__ import annotations

from typing import Any

from spotshift.aws.errors import SpotshiftAwsError
from spotshift.settings import Settings

_settings = Settings()
AWS_STEP_RETRIES = 1
AWS_STEP_RETRY_DELAY_S = _settings.aws_task_retry_delay_s


def retry_when_aws_gave_up(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: True for a retryable AWS error botocore's attempts did not cure."""
    try:
        state.result()
    except SpotshiftAwsError as exc:
        return exc.retryable
    except Exception:  # noqa: BLE001 - any other failure is final: the flow decides what to do with it
        return False
    return False


def retry_unless_input_is_final(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition for a step that reads the user's inputs (the model's config.json): a
    refused read, a missing object or unusable metadata (ValueError) is final, since retrying asks
    the same question; a retryable AWS error or any other failure (the Hub unreachable) is retried."""
    try:
        state.result()
    except SpotshiftAwsError as exc:
        return exc.retryable
    except ValueError:
        return False
    except Exception:  # noqa: BLE001 - a network error on the Hub: worth another try
        return True
    return False


AWS_STEP_RETRY = dict(retries=AWS_STEP_RETRIES, retry_delay_seconds=AWS_STEP_RETRY_DELAY_S,
                      retry_condition_fn=retry_when_aws_gave_up)


def retry_unless_store_refused(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition for an idempotent store write: a missing row or a write the store
    refuses (JobNotFound, a ValueError such as an invalid document) is final, since retrying writes
    the same; any other failure (the database unreachable, a timeout) is worth another try."""
    try:
        state.result()
    except (LookupError, ValueError):
        return False
    except Exception:  # noqa: BLE001 - the store did not answer: the same write again is harmless
        return True
    return False


STORE_WRITE_RETRY = dict(retries=2, retry_delay_seconds=1, retry_condition_fn=retry_unless_store_refused)
