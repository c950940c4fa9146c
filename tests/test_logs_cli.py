"""`spotshift logs JOB [--follow]` reads the instance logs the user-data uploads to the moto server's
S3: the newest instance's log, then (following) only what each later upload appended, a newer
instance's log after a migration, and an end once the job has ended."""

from __future__ import annotations

import argparse
import io
import time

import pytest

from deployments.cli import main
from deployments.logs_cli import FOLLOW_INTERVAL_S, run_logs
from spotshift.models import JobStatus
from training.bootstrap import render_user_data
from training.contract import JobPaths

SUBMIT = ["submit", "--model", "gpt2", "--dataset", "s3://bucket/data.txt", "--max-steps", "10", "--budget-usd", "5",
          "--deadline-hours", "2", "--run", "none"]


@pytest.fixture
def cli_env(aws_env, bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("SPOTSHIFT_HOME", str(tmp_path))
    monkeypatch.setenv("SPOTSHIFT_AWS_ENDPOINT_URL", aws_env)
    monkeypatch.setenv("SPOTSHIFT_BUCKET", bucket)
    return bucket


def submitted(capsys) -> str:
    assert main(SUBMIT) == 0
    return capsys.readouterr().out.strip()


def upload(s3, bucket: str, job_id: str, instance_id: str, text: str) -> None:
    """What the user-data's `aws s3 cp "$LOG_FILE" ...logs/"$INSTANCE_ID.log"` leaves: the whole log so far."""
    s3.put_object(Bucket=bucket, Key=JobPaths(bucket, job_id).log_key(instance_id), Body=text.encode())


def test_logs_prints_the_newest_instances_log(cli_env, s3, capsys):
    job_id = submitted(capsys)
    upload(s3, cli_env, job_id, "i-0old", "old instance\n")
    time.sleep(1.1)  # S3's LastModified has whole seconds; instances' uploads are minutes apart
    upload(s3, cli_env, job_id, "i-0new", "spotshift bootstrap: start\nspotshift bootstrap: starting trainer\n")
    assert main(["logs", job_id]) == 0
    assert capsys.readouterr().out == "spotshift bootstrap: start\nspotshift bootstrap: starting trainer\n"
    assert main(["logs", job_id, "--instance", "i-0old"]) == 0
    assert capsys.readouterr().out == "old instance\n"


def test_a_job_without_a_log_yet_says_where_it_will_be(cli_env, capsys):
    job_id = submitted(capsys)
    assert main(["logs", job_id]) == 1
    err = capsys.readouterr().err
    assert f"no log of any instance under s3://{cli_env}/jobs/{job_id}/logs/ yet" in err


def test_follow_prints_each_append_once_moves_to_a_newer_instance_and_ends_with_the_job(cli_env, s3, capsys):
    from flows.runtime import Runtime

    job_id = submitted(capsys)
    jobs = Runtime.stores_only().jobs
    boot = "spotshift bootstrap: start\n"
    upload(s3, cli_env, job_id, "i-01", boot)
    steps = iter([
        lambda: upload(s3, cli_env, job_id, "i-01", boot + "pip install ...\n"),  # the next minute's upload
        lambda: None,  # nothing new: nothing printed
        lambda: time.sleep(1.1) or upload(s3, cli_env, job_id, "i-02", "second instance\n"),  # moved after a preemption
        lambda: _end(jobs, job_id),  # the job ends: one more read, then the follow ends
        lambda: upload(s3, cli_env, job_id, "i-02", "second instance\nspotshift bootstrap: exit 0\n"),  # lands late
    ])
    sleeps = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        next(steps)()

    out = io.StringIO()
    args = argparse.Namespace(job_id=job_id, instance=None, follow=True, interval=FOLLOW_INTERVAL_S)
    assert run_logs(args, jobs=jobs, s3=s3, bucket=cli_env, out=out, sleep=sleep) == 0
    assert out.getvalue() == (boot + "pip install ...\n" + "\n==> i-02 (a newer instance) <==\n"
                              "second instance\nspotshift bootstrap: exit 0\n")
    assert sleeps == [FOLLOW_INTERVAL_S] * 5


def _end(jobs, job_id: str) -> None:
    from datetime import UTC, datetime

    jobs.transition(job_id, JobStatus.CANCELLED, now=datetime.now(UTC), message="test")


def test_a_hung_boot_shows_within_two_minutes():
    """The user-data uploads every minute (its default) and --follow polls every 10 s: a line written
    at boot is printed at most 70 s later."""
    script = render_user_data("s3://b/jobs/j/spec.json", log_uri="s3://b/jobs/j/logs/")
    upload_every = float(script.split("    sleep ", 1)[1].split(" &", 1)[0])
    assert upload_every + FOLLOW_INTERVAL_S <= 120
