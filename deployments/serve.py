"""`spotshift serve`: the prefect.yaml deployments served from one process, for users without a
work pool and worker (same flows, same schedules)."""

from __future__ import annotations

from prefect import serve


ACTION_DEPLOYMENT = "job-action/job-action"
MIGRATE_DEPLOYMENT = "migrate-job/migrate-job"


def action_deployments() -> dict[str, str]:
    """The fleet's actions, each started as a run of the job-action deployment (prefect.yaml: the same)."""
    from spotshift.fleet import Action

    return {a.value: ACTION_DEPLOYMENT for a in Action if a is not Action.NONE}


def deployments():
    from flows.actions import job_action
    from flows.continuous_scout import continuous_scout
    from flows.fleet import fleet
    from flows.migrate_job import migrate_job
    from flows.train_job import train_job
    from spotshift.settings import get_settings

    return [
        train_job.to_deployment(name="train-job", tags=["spotshift"]),
        continuous_scout.to_deployment(name="continuous-scout", interval=600, tags=["spotshift"],
                                       parameters={"migrate_deployment": MIGRATE_DEPLOYMENT}),
        migrate_job.to_deployment(name="migrate-job", tags=["spotshift"]),
        fleet.to_deployment(name="fleet", interval=get_settings().fleet_interval_seconds, concurrency_limit=1,
                            tags=["spotshift"], parameters={"action_deployments": action_deployments()}),
        job_action.to_deployment(name="job-action", tags=["spotshift"]),
    ]


def serve_all() -> None:
    serve(*deployments())
