"""The `spotshift` command: bad input is refused before anything is stored, jobs are listed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from deployments.cli import main


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOTSHIFT_HOME", str(tmp_path))
    return tmp_path


def test_submit_refuses_bad_input_naming_the_field_and_stores_nothing(home, capsys):
    code = main(["submit", "--model", "gpt2; rm -rf /", "--dataset", "s3://b/data.txt", "--max-steps", "10",
                 "--budget-usd", "5", "--deadline-hours", "2", "--regions", "mars-north-1", "--run", "none"])
    err = capsys.readouterr().err
    assert code == 2
    assert "model" in err and "regions" in err and "Choose between" in err
    assert main(["jobs"]) == 0
    assert capsys.readouterr().out == ""


def test_submit_stores_a_job_once_per_idempotency_key_and_lists_it(home, capsys):
    args = ["submit", "--model", "gpt2", "--dataset", "s3://bucket/data.txt", "--max-steps", "10",
            "--budget-usd", "5", "--deadline-hours", "2", "--idempotency-key", "k-1", "--run", "none"]
    assert main(args) == 0
    first = capsys.readouterr().out.strip()
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == first
    assert main(["jobs"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{first}\tpending\t0/10")
    assert main(["status", first]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["status"] == "pending" and status["workloads"] == [] and status["cost_usd"] == 0


def test_submit_from_a_file_with_flag_overrides(home, tmp_path, capsys):
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({"model": "gpt2", "dataset": "s3://bucket/data.jsonl", "max_steps": 10,
                                "budget_usd": 5, "deadline": (datetime.now(UTC) + timedelta(hours=3)).isoformat()}))
    assert main(["submit", "--file", str(spec), "--max-steps", "20", "--run", "none"]) == 0
    job_id = capsys.readouterr().out.strip()
    assert main(["status", job_id]) == 0
    assert json.loads(capsys.readouterr().out)["job_id"] == job_id
    from deployments import api

    assert api.get_job(job_id).request.max_steps == 20


def test_submit_of_an_ec2_job_reading_outside_the_granted_prefixes_names_the_field_and_the_command(
        home, capsys, monkeypatch):
    monkeypatch.setenv("SPOTSHIFT_COMPUTE_BACKEND", "ec2")
    monkeypatch.setenv("SPOTSHIFT_BUCKET", "my-spotshift")
    monkeypatch.setenv("SPOTSHIFT_DATA_PREFIXES", '["s3://my-bucket/models/"]')
    code = main(["submit", "--model", "s3://my-bucket/models/base/", "--dataset", "s3://my-bucket/data/corpus.jsonl",
                 "--max-steps", "10", "--budget-usd", "5", "--deadline-hours", "2", "--run", "none"])
    err = capsys.readouterr().err
    assert code == 2
    assert "dataset 's3://my-bucket/data/corpus.jsonl'" in err and "model 's3://" not in err  # the model is granted
    assert "spotshift aws setup --data s3://my-bucket/data/" in err
    assert main(["jobs"]) == 0 and capsys.readouterr().out == ""


def test_approve_without_a_flow_run_says_why(home, capsys):
    assert main(["submit", "--model", "gpt2", "--dataset", "s3://bucket/d.txt", "--max-steps", "5",
                 "--budget-usd", "1", "--deadline-hours", "1", "--run", "none"]) == 0
    job_id = capsys.readouterr().out.strip()
    assert main(["approve", job_id]) == 2
    assert "no flow run yet" in capsys.readouterr().err


def test_unknown_job_is_an_error_not_a_traceback(home, capsys):
    assert main(["status", "job-doesnotexist"]) == 2
    assert "job-doesnotexist" in capsys.readouterr().err
