"""fleet (scheduled, one pass at a time): list every region's spotshift instances once, read every
running job's heartbeat (conditional GET), judge all jobs with the pure monitor, record their
measurements, and report (or start) the action each finding calls for, keyed job:workload:action."""

from __future__ import annotations

from typing import Any, Mapping

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from flows.runtime import Runtime
from spotshift.fleet import FleetJudgment, Thresholds
from tasks.fleet import judge, list_instances, read_fleet_jobs, read_heartbeats, record_measurements, save_marks


def fleet_regions(rt: Runtime) -> list[str]:
    """The regions a pass lists: every allowed region and any the backend launched in."""
    return list(dict.fromkeys([*rt.settings.regions, *getattr(rt.backend, "regions", [])]))


@task(name="start-actions", cache_policy=NO_CACHE)
def start_actions(judgment: FleetJudgment, deployments: Mapping[str, str]) -> dict[str, str]:
    """Start one flow run of `deployments[action]` per finding whose action has a deployment, with
    the finding's key as the run's idempotency key (a second pass finding the same thing gets the
    same run back). Returns key -> flow run id."""
    from prefect.deployments import run_deployment

    started = {}
    for f in judgment.actions:
        name = deployments.get(f.action.value)
        if name is None:
            continue
        run = run_deployment(name, parameters={"job_id": f.job_id, "workload_id": f.workload_id,
                                               "action": f.action.value}, idempotency_key=f.key, timeout=0,
                             as_subflow=False, flow_run_name=f"{f.action.value}-{f.job_id}")
        started[f.key] = str(run.id)
    return started


def run_actions_here(judgment: FleetJudgment, runtime: Runtime) -> dict[str, str]:
    """Carry out every finding's action in this process, one `job-action` flow run after the other
    (each its own run in the UI, under this pass). One that fails has ended its job (its failure
    hook); the others still run, then the first failure is raised to the caller, as a job run here
    raised it before the controller (the smoke's own verdicts, a trainer failed for good). Returns
    key -> the action's outcome."""
    from flows.actions import job_action

    logger, done, failed = get_run_logger(), {}, []
    for f in judgment.actions:
        try:
            done[f.key] = job_action(f.job_id, f.workload_id, f.action.value, runtime=runtime)["outcome"]
        except Exception as exc:  # noqa: BLE001 - one job's failed action must not stop the others'
            logger.error("Job %s: %s failed: %s", f.job_id, f.action.value, exc)
            done[f.key] = f"failed: {exc.__class__.__name__}"
            failed.append(exc)
    if failed:
        raise failed[0]
    return done


@flow(name="fleet")
def fleet(runtime: Runtime | None = None, marks: Any = None, action_deployments: dict[str, str] | None = None,
          act_here: bool = False, lease_seconds: float | None = None) -> list[dict[str, str]]:
    """One pass over every running job; returns one row per finding (job, workload, instance,
    finding, action, key). The actions: `action_deployments` (action -> "flow/deployment") starts
    each as a flow run of that deployment (idempotency key: the finding's); `act_here` runs them in
    this process (`spotshift submit --run inline`, the demo, tests); with neither they are only reported
    (the table artifact `fleet`). `lease_seconds`: how long a job may sit between two states
    before its action run counts as dead (default: settings.job_lease_seconds)."""
    logger = get_run_logger()
    rt = runtime or Runtime.from_settings()
    if marks is None:
        from blocks.stores import open_fleet_marks

        marks = open_fleet_marks(rt.settings)
    if rt.backend is None or not hasattr(rt.backend, "ec2_client"):
        raise ValueError("the fleet pass needs a compute backend with per-region EC2 clients (ec2 or local)")
    now = rt.clock()
    remembered = marks.load()
    # quote(): thousands of jobs, instances and marks pass between the tasks; Prefect would visit
    # every field of every one of them for task inputs (9 of 11 s of a 1,000-job pass)
    listing = list_instances(rt.backend.ec2_client, fleet_regions(rt))  # before the stores: no false orphan
    jobs = read_fleet_jobs(rt.jobs, rt.ledger)
    heartbeats = read_heartbeats(rt.s3, quote(jobs.running), quote(remembered), rt.settings.bucket,
                                 rt.settings.fleet_read_concurrency)
    judgment = judge(quote(jobs), quote(listing), quote(heartbeats), quote(remembered), now,
                     Thresholds(stall_seconds=rt.settings.heartbeat_stall_seconds,
                                first_heartbeat_seconds=rt.settings.first_heartbeat_seconds,
                                lease_seconds=rt.settings.job_lease_seconds if lease_seconds is None
                                else lease_seconds))
    written = record_measurements(rt.jobs, quote(judgment), now)
    save_marks(marks, quote(judgment))
    if act_here:
        started = run_actions_here(judgment, rt)
    else:
        started = start_actions(quote(judgment), action_deployments) if action_deployments else {}
    rows = [{**f.row, "flow_run": started.get(f.key, "")} for f in judgment.findings]
    create_table_artifact(key="fleet", table=rows or [{"job": "", "finding": "no running jobs"}],
                          description=f"fleet pass: {len(jobs.running)} running jobs, "
                                      f"{len(listing.instances)} instances in {len(listing.listed)} regions")
    for f in judgment.actions:
        logger.info("Job %s: %s -> %s (%s)%s", f.job_id, f.finding.value, f.action.value, f.detail,
                    f"; {started[f.key]}" if f.key in started else "; not started (no action deployment)")
    logger.info("Fleet pass: %d running jobs, %d instances listed, %d heartbeats changed, %d measurements written, "
                "%d actions", len(jobs.running), len(listing.instances),
                sum(1 for r in heartbeats.values() if r.changed), written, len(judgment.actions))
    return rows

