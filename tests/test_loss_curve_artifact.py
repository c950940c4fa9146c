"""The loss-curve artifact: metrics.jsonl written by the trainer's MetricsLog into the moto S3,
tasks.monitor.refresh_loss_curve run against it, the artifact read back by key from the Prefect API:
shown while the job trains, rewritten in place (one version per job) when records are added, the
whole curve when the job is finalized; a garbled or missing file leaves it as it was."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from blocks.stores import open_job_store
from spotshift.aws.s3 import get_if_changed
from spotshift.loss_curve import loss_curve_key
from spotshift.models import JobCreate, Market, Workload
from spotshift.settings import Settings
from training.contract import METRICS, JobPaths, MetricsRecord, Progress, TrainerState, write_progress
from training.metrics import MetricsLog
from training.storage import S3Store

pytestmark = pytest.mark.xdist_group("prefect")

NOW = datetime(2026, 11, 28, 9, tzinfo=UTC)


@pytest.fixture
def job_run(tmp_path, s3, bucket):
    """A stored job, its output prefix in the moto S3, a workload on instance i-1."""
    jobs = open_job_store(Settings(home=tmp_path))
    request = JobCreate.model_validate(dict(model="gpt2", dataset="s3://inputs/d.txt", max_steps=100, budget_usd=1,
                                            deadline=NOW + timedelta(days=1)), context={"now": NOW})
    job = jobs.create(request, now=NOW, job_id=f"job-{uuid.uuid4().hex[:10]}")
    workload = Workload(job_id=job.id, instance_id="i-1", instance_type="g5.xlarge", region="us-east-1",
                        zone="us-east-1a", market=Market.SPOT, usd_per_hour=0.4, started_at=NOW)
    return jobs, job.id, workload, JobPaths(bucket=bucket, job_id=job.id).output


def heartbeat(s3, output: str, step: int, state: TrainerState = TrainerState.training) -> None:
    write_progress(s3, output, Progress(state=state, step=step, max_steps=100, instance_id="i-1",
                                        updated_at=NOW + timedelta(seconds=step)))


def refresh(watch, s3, output: str, job_id: str, trained_to: int | None) -> None:
    """What a flow does with the job's curve: re-render it when the heartbeat (`trained_to`) is past
    the newest record shown; None reads it anyway (finalize, once the trainer is done)."""
    from tasks.monitor import refresh_loss_curve

    refresh_loss_curve(watch.loss_curve, s3=s3, output=output, job_id=job_id, trained_to=trained_to)


def loss_curve_versions(job_id: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        key = ArtifactFilterKey(any_=[loss_curve_key(job_id)])
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=key))


def latest_loss_curve(job_id: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey

    with get_client(sync_client=True) as client:
        [latest] = client.read_latest_artifacts(artifact_filter=ArtifactCollectionFilter(
            key=ArtifactCollectionFilterKey(any_=[loss_curve_key(job_id)])))
    assert latest.type == "markdown"
    return latest.data


def shown(markdown: str) -> list[tuple]:
    """(step, loss[, eval loss]) of the artifact's table."""
    rows = [line.strip("|").split("|") for line in markdown.splitlines() if line.startswith("| ")][1:]
    return [(int(r[0]), *(cell.strip() for cell in r[1:])) for r in rows]


def test_the_artifact_follows_metrics_jsonl_while_it_trains_and_shows_the_whole_curve_at_the_end(
        prefect_api, s3, job_run):
    from tasks.monitor import Watch

    jobs, job_id, workload, output = job_run
    metrics = MetricsLog(S3Store.from_uri(s3, output), resumed_at_step=None)
    for step in (10, 20):
        metrics.add(MetricsRecord(step=step, loss=4.0 - step / 100, eval_loss=4.5 if step == 20 else None, at=NOW))
    metrics.flush()
    heartbeat(s3, output, 20)
    watch = Watch(workload)

    refresh(watch, s3, output, job_id, 20)
    first = latest_loss_curve(job_id)
    assert shown(first) == [(10, "3.9000", "–"), (20, "3.8000", "4.5000")]
    assert f"### Loss: job `{job_id}`" in first and "eval loss **4.5000** at step 20" in first

    for step in (30, 40):
        metrics.add(MetricsRecord(step=step, loss=4.0 - step / 100, at=NOW))
    metrics.flush()
    heartbeat(s3, output, 40)
    refresh(watch, s3, output, job_id, 40)
    assert [row[:2] for row in shown(latest_loss_curve(job_id))][-2:] == [(30, "3.7000"), (40, "3.6000")]

    metrics.add(MetricsRecord(step=100, loss=3.0, eval_loss=3.2, at=NOW))
    metrics.close()  # the trainer's last flush, before its last heartbeat
    heartbeat(s3, output, 100, TrainerState.done)
    refresh(watch, s3, output, job_id, None)  # finalize: the whole curve
    final = latest_loss_curve(job_id)
    assert [row[0] for row in shown(final)] == [10, 20, 30, 40, 100] and shown(final)[-1] == (100, "3.0000", "3.2000")
    assert "step **100**" in final and "5 records" in final
    [version] = loss_curve_versions(job_id)  # rewritten in place: one version for the watch
    assert version.id == watch.loss_curve.artifact_id


def test_a_garbled_or_missing_metrics_file_leaves_the_artifact_and_the_watch_goes_on(prefect_api, s3, job_run):
    from tasks.monitor import Watch

    jobs, job_id, workload, output = job_run
    store = S3Store.from_uri(s3, output)
    heartbeat(s3, output, 5)
    watch = Watch(workload)
    refresh(watch, s3, output, job_id, 5)  # no metrics.jsonl yet
    assert loss_curve_versions(job_id) == []

    store.put_bytes(METRICS, MetricsRecord(step=10, loss=2.5, at=NOW).model_dump_json().encode() + b"\n")
    heartbeat(s3, output, 10)
    refresh(watch, s3, output, job_id, 10)
    assert shown(latest_loss_curve(job_id)) == [(10, "2.5000")]

    store.put_bytes(METRICS, b'{"step": 20, "loss": "not a number"}\n\x00\xff garbage')
    heartbeat(s3, output, 20)
    refresh(watch, s3, output, job_id, 20)
    store.delete_keys([METRICS])
    heartbeat(s3, output, 30)
    refresh(watch, s3, output, job_id, 30)
    assert shown(latest_loss_curve(job_id)) == [(10, "2.5000")]
    assert len(loss_curve_versions(job_id)) == 1


def test_an_unchanged_object_is_not_sent_again(s3, bucket):
    uri = f"s3://{bucket}/jobs/j/{METRICS}"
    assert get_if_changed(s3, uri, None).data is None  # none yet
    S3Store.from_uri(s3, f"s3://{bucket}/jobs/j/").put_bytes(METRICS, b"one\n")
    first = get_if_changed(s3, uri, None)
    assert (first.changed, first.data) == (True, b"one\n")
    again = get_if_changed(s3, uri, first.etag)
    assert (again.changed, again.data, again.etag) == (False, None, first.etag)
    S3Store.from_uri(s3, f"s3://{bucket}/jobs/j/").put_bytes(METRICS, b"one\ntwo\n")
    assert get_if_changed(s3, uri, first.etag).data == b"one\ntwo\n"
