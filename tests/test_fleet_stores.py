"""The fleet pass's writes to the embedded stores: the job store's update_many (one scan, one SQLite
transaction) and the marks a pass leaves for the next one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from blocks.stores import open_fleet_marks, open_job_store
from spotshift.fleet import FleetMark
from spotshift.models import JobCreate, JobMeasurements, JobStatus, JobUpdate
from spotshift.monitoring import RateMeter
from spotshift.settings import Settings
from training.contract import Progress, TrainerState

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def job(jobs, i: int):
    request = JobCreate.model_validate(dict(
        name=f"j{i}", model="gpt2", dataset="s3://data/corpus.txt", max_steps=1000, budget_usd=50,
        deadline=T0 + timedelta(days=2), regions=["us-east-1"], instance_types=["g5.xlarge"]), context={"now": T0})
    created = jobs.create(request, now=T0)
    jobs.transition(created.id, JobStatus.PLANNING, now=T0)
    return created.id


def test_update_many_writes_each_jobs_fields_and_nothing_else(tmp_path):
    jobs = open_job_store(Settings(home=tmp_path))
    a, b, untouched = (job(jobs, i) for i in range(3))
    later = T0 + timedelta(minutes=5)
    rate = JobMeasurements(steps_per_hour=1200.0, rate_instance_type="g5.xlarge", training_workload_id="wl-a")

    matched = jobs.update_many({a: JobUpdate(step=40, measured=rate), b: JobUpdate(step=7),
                                "job-missing": JobUpdate(step=1)}, now=later)

    assert matched == 2
    got_a, got_b, got_c = jobs.get(a), jobs.get(b), jobs.get(untouched)
    assert (got_a.step, got_a.measured, got_a.updated_at) == (40, rate, later)
    assert (got_b.step, got_b.measured, got_b.updated_at) == (7, JobMeasurements(), later)
    assert (got_c.step, got_c.updated_at) == (0, T0)
    assert got_a.status is JobStatus.PLANNING and [e.kind for e in got_a.events] == ["created", "status"]
    assert jobs.update_many({}, now=later) == 0


def test_marks_survive_a_new_process(tmp_path):
    settings = Settings(home=tmp_path)
    progress = Progress(state=TrainerState.training, step=5, max_steps=10, instance_id="i-1", updated_at=T0)
    marks = {"job-1": FleetMark(workload_id="wl-1", last_sign_of_life=T0, etag='"abc"', progress=progress,
                                last_beat=T0, meter=RateMeter(first_step=1, first_at=T0 - timedelta(minutes=1),
                                                              last_step=5, last_at=T0))}
    open_fleet_marks(settings).save(marks)
    assert open_fleet_marks(settings).load() == marks
    open_fleet_marks(settings).save({})
    assert open_fleet_marks(settings).load() == {}
