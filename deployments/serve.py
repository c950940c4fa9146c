"""`spotshift serve`: the prefect.yaml deployments served from one process, for users without a
work pool and worker (same flows, same schedules)."""

from __future__ import annotations

from prefect import serve


def deployments():
    from flows.continuous_scout import continuous_scout
    from flows.fleet import fleet
    from flows.migrate_job import migrate_job
    from flows.reaper import reaper
    from flows.train_job import train_job
    from spotshift.settings import get_settings

    return [
        train_job.to_deployment(name="train-job", tags=["spotshift"]),
        continuous_scout.to_deployment(name="continuous-scout", interval=600, tags=["spotshift"]),
        reaper.to_deployment(name="reaper", cron="0 * * * *", tags=["spotshift"]),
        migrate_job.to_deployment(name="migrate-job", tags=["spotshift"]),
        fleet.to_deployment(name="fleet", interval=get_settings().fleet_interval_seconds, concurrency_limit=1,
                            tags=["spotshift"]),
    ]


def serve_all() -> None:
    serve(*deployments())
