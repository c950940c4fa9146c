"""What a flow run keeps of the workload it acts on (Watch), and the job's loss-curve artifact. The
watching itself is the fleet pass's (flows/fleet.py over spotshift.fleet): one pass judges every
running job; no flow run polls its own instance."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import httpx
from prefect import get_run_logger
from prefect.exceptions import MissingContextError
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactUpdate

from spotshift.aws.errors import SpotshiftAwsError
from spotshift.aws.s3 import get_if_changed
from spotshift.loss_curve import loss_curve_key, render_loss_curve
from spotshift.models import Workload
from training.contract import METRICS, parse_metrics
from training.storage import S3Store


@dataclass
class LossCurve:
    """The loss-curve artifact of one job: one version, rewritten in place when metrics.jsonl changed."""

    artifact_id: UUID | None = None
    etag: str | None = None  # of the metrics.jsonl last read: a conditional GET skips an unchanged one
    last_step: int = -1  # step of the newest record shown


@dataclass
class Watch:
    """The workload a flow run acts on, and the job's loss-curve artifact."""

    workload: Workload
    loss_curve: LossCurve = field(default_factory=LossCurve)


def _logger():
    try:
        return get_run_logger()
    except MissingContextError:  # outside a flow or task run
        return logging.getLogger(__name__)


def refresh_loss_curve(curve: LossCurve, *, s3: Any, output: str, job_id: str, trained_to: int | None) -> None:
    """Re-render the `loss-curve-<job id>` artifact when metrics.jsonl changed. `trained_to`: the
    heartbeat's step; no read while it is not past the newest record shown (None: read anyway).
    A missing, empty or garbled file leaves the artifact as it was."""
    if trained_to is not None and trained_to <= curve.last_step:
        return
    logger = _logger()
    try:
        read = get_if_changed(s3, S3Store.from_uri(s3, output).uri(METRICS), curve.etag)
        curve.etag = read.etag
        records = parse_metrics(read.data) if read.changed else []
    except (SpotshiftAwsError, ValueError) as exc:  # ValueError: a line that is not a MetricsRecord
        logger.debug("metrics.jsonl of job %s not read: %s", job_id, exc.__class__.__name__)
        return
    if not records:
        return
    markdown = render_loss_curve(job_id, records)
    try:
        if curve.artifact_id is None:
            curve.artifact_id = create_markdown_artifact(
                markdown=markdown, key=loss_curve_key(job_id), description=f"loss of job {job_id} while it trains")
        else:
            with get_client(sync_client=True) as client:
                client.update_artifact(curve.artifact_id, ArtifactUpdate(data=markdown))
    except httpx.HTTPError as exc:  # the Prefect API is away: the next poll tries again
        curve.etag = None
        logger.warning("loss-curve artifact of job %s not written: %s", job_id, exc.__class__.__name__)
        return
    curve.last_step = records[-1].step
