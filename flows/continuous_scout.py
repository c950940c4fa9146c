"""continuous-scout (scheduled): one market snapshot for every running job, the same policy's
stay/move decision per job, then approvals and migrations for the moves."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.migrate_job import migrate_job
from flows.runtime import Runtime
from spotshift.market.query import OfferQuery
from spotshift.models import Job, JobStatus, MarketSnapshot, Workload
from spotshift.lifecycle.state import live_job_state
from spotshift.policy import decide
from spotshift.policy.state import Decision, JobState, Move
from tasks.measurements import record_market
from tasks.scout import scout


@dataclass(frozen=True)
class RunningJob:
    job: Job
    workload: Workload
    query: OfferQuery
    state: JobState


def union_query(queries: list[OfferQuery]) -> OfferQuery:
    """One query that covers every job's (each job's own query filters the snapshot after)."""
    types = None if any(q.instance_types is None for q in queries) else \
        tuple(dict.fromkeys(t for q in queries for t in q.instance_types or ()))
    gpus = None if any(q.gpus is None for q in queries) else tuple(dict.fromkeys(g for q in queries for g in q.gpus or ()))
    return OfferQuery(regions=tuple(dict.fromkeys(r for q in queries for r in q.regions)), instance_types=types,
                      gpus=gpus, markets=tuple(dict.fromkeys(m for q in queries for m in q.markets)),
                      min_total_gpu_memory_gib=min(q.min_total_gpu_memory_gib for q in queries))


def for_job(snapshot: MarketSnapshot, query: OfferQuery) -> MarketSnapshot:
    return snapshot.model_copy(update={"offers": [o for o in snapshot.offers if query.accepts(o)]})


@task(name="running-jobs", cache_policy=NO_CACHE)
def running_jobs(rt: Runtime, now: datetime) -> list[RunningJob]:
    """Every running job with its open workload and the JobState the policy needs (built from the
    stores by the same function train-job uses)."""
    open_by_id = {w.id: w for w in rt.ledger.open_workloads()}
    running = [j for j in rt.jobs.list(JobStatus.RUNNING) if j.current_workload_id in open_by_id]
    workloads = rt.ledger.workloads_of([j.id for j in running])  # one read for every job
    outlooks: dict[tuple[str, ...], object] = {}  # one outlook per set of regions
    out = []
    for job in running:
        query = OfferQuery.for_job(job.request, job.sizing or job.gpu_memory_gib or 0.0)
        if query.regions not in outlooks:
            outlooks[query.regions] = rt.outlook(query, now)
        state = live_job_state(job, workloads[job.id], now=now, default_changeover_hours=rt.changeover_hours,
                               checkpoint_region=rt.bucket_region(rt.paths(job).bucket),
                               outlook=outlooks[query.regions])
        out.append(RunningJob(job, open_by_id[job.current_workload_id], query, state))
    return out


@task(name="decide-moves", cache_policy=NO_CACHE)
def decide_all(jobs: list[RunningJob], snapshot: MarketSnapshot, now: datetime, policy: str) -> list[tuple[RunningJob, Decision]]:
    return [(j, decide(j.state, for_job(snapshot, j.query), now, policy=policy)) for j in jobs]


def start_move(job: RunningJob, move: Move, deployment: str) -> str:
    """Start the move as a flow run of `deployment`, keyed by spotshift.fleet.move_key (a second
    scout that decides the same move gets the same run back); its id."""
    from prefect.deployments import run_deployment

    from spotshift.fleet import move_key

    target = move.target.key.text
    run = run_deployment(deployment, parameters={"job_id": job.job.id, "target": move.target.model_dump(mode="json"),
                                                 "reason": move.reason.value,
                                                 "expected_saving_usd": move.expected_saving_usd},
                         idempotency_key=move_key(job.job.id, job.workload.id, target,
                                                  job.job.declined_moves.get(target)), timeout=0,
                         as_subflow=False, flow_run_name=f"migrate-{job.job.id}")
    return str(run.id)


@flow(name="continuous-scout")
def continuous_scout(runtime: Runtime | None = None, migrate: bool = True,
                     migrate_deployment: str | None = None) -> dict:
    """Re-scout every running job once; returns {job_id: decision} as text. A move the policy
    decides is made by a migrate-job run: started through `migrate_deployment` (its key:
    spotshift.fleet.move_key; a move declined within its quiet time is not started), or run here
    when None."""
    logger = get_run_logger()
    rt = runtime or Runtime.from_settings()
    now = rt.clock()
    jobs = running_jobs(rt, now)
    if not jobs:
        logger.info("No running jobs")
        return {}
    query = union_query([j.query for j in jobs])
    snapshot = scout.with_options(refresh_cache=True)(rt.market, query, now)  # a move decides on the market of now
    record_market(rt.history, snapshot, query.regions, now)
    decisions = decide_all(jobs, snapshot, now, rt.policy)
    create_table_artifact(key="continuous-scout", table=[
        {"job": j.job.id, "zone": j.workload.zone, "decision": type(d).__name__,
         "why": getattr(d, "reason", ""), "target": getattr(getattr(d, "target", None), "zone", "")}
        for j, d in decisions])
    for j, d in decisions:
        if migrate and isinstance(d, Move):
            logger.info("Job %s: move %s -> %s (%s)", j.job.id, j.workload.zone, d.target.zone, d.reason)
            if migrate_deployment:
                declined_until = j.job.declined_moves.get(d.target.key.text)
                if declined_until is not None and declined_until > now:
                    logger.info("Job %s: the move to %s was declined; not asked again before %s", j.job.id,
                                d.target.zone, declined_until)
                    continue
                start_move(j, d, migrate_deployment)
            else:
                migrate_job(j.job.id, d.target, d.reason, d.expected_saving_usd, runtime=rt)
    return {j.job.id: f"{type(d).__name__}: {getattr(d, 'reason', '')}" for j, d in decisions}
