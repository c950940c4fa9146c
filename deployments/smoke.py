"""`spotshift aws smoke --region R`: the one command that proves an account can train. It runs the
region's checks, takes the cheapest usable GPU spot offer, refuses when the run's estimate is above
the cap, then runs a real train-job flow on a tiny model (20 steps) whose first instance is
terminated after its checkpoint, as a preemption would, so that a second one resumes; it prints
the phases, the cost and PASS or FAIL naming the failed step. Whatever happens, what it launched
is terminated."""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from spotshift.clock import wall_clock
from spotshift.settings import Settings
from spotshift.smoke import (
    DEFAULT_MAX_USD, SmokeAssumptions, SmokeEstimate, SmokeFailed, SmokeReport, SmokeStep, SmokeTimeline,
    check_smoke_input,
)

Clients = Callable[[str, str], Any]  # (service, region) -> boto3 client
SMOKE_POLICY = "skypilot_eager_next_region"  # spot only: launch the cheapest spot offer, relaunch after a preemption


@dataclass(frozen=True)
class SmokeOptions:
    region: str
    max_usd: float = DEFAULT_MAX_USD
    yes: bool = False  # launch without asking
    assumptions: SmokeAssumptions = SmokeAssumptions()

    def __post_init__(self) -> None:
        check_smoke_input(self.region, self.max_usd)


def run_smoke(options: SmokeOptions, *, settings: Settings, clients: Clients, bucket: str,
              runtime_factory: Callable[[Settings], Any] | None = None, confirm: Callable[[str], bool] | None = None,
              clock: Callable[[], datetime] = wall_clock, out=sys.stdout) -> int:
    """Run the smoke; 0 PASS, 1 FAIL, 2 refused (above the cap, or not confirmed: nothing launched).
    `runtime_factory(settings)` builds the flow's Runtime (default: Runtime.from_settings)."""
    say = lambda *a: print(*a, file=out, flush=True)  # noqa: E731
    region = options.region
    timeline = SmokeTimeline()
    timeline.mark("start", clock())
    estimate: SmokeEstimate | None = None
    try:
        rows = _preflight(clients, settings, bucket, region, say)
        timeline.mark("checked", clock())
        estimate = _offer_and_estimate(clients, settings, region, rows, options, clock(), say)
        timeline.mark("chosen", clock())
    except SmokeFailed as exc:
        return _finish(SmokeReport(region, options.max_usd, timeline=timeline, failure=exc), say)
    except KeyboardInterrupt:
        return _finish(SmokeReport(region, options.max_usd, timeline=timeline, failure=SmokeFailed(
            SmokeStep.PREFLIGHT if "checked" not in timeline.marks else SmokeStep.OFFER,
            "interrupted (Ctrl-C); nothing was launched")), say)
    from spotshift.smoke import refusal

    refused = refusal(estimate, options.max_usd)
    if refused:
        say(refused)
        return 2
    if not options.yes and not _confirmed(confirm, estimate, say):
        return 2
    from deployments.demo import prefect_api

    with prefect_api(say):
        report = _launch_and_verify(options, estimate, settings.model_copy(update={"bucket": bucket,
                                                                                   "regions": [region]}),
                                    clients, runtime_factory, timeline, clock, say)
    return _finish(report, say)


def _finish(report: SmokeReport, say) -> int:
    from spotshift.smoke import render_summary

    say("")
    for line in render_summary(report):
        say(line)
    return 0 if report.passed else 1


def _preflight(clients: Clients, settings: Settings, bucket: str, region: str, say) -> list:
    """The region's `spotshift aws check` rows; SmokeFailed (preflight) naming each failed check."""
    from spotshift.aws.check import CheckConfig, check_failures, failure_summary, quota_summary, render_rows, run_check

    rows = run_check(clients, CheckConfig.from_settings(settings, bucket=bucket, regions=[region]))
    failed = check_failures(rows)
    if failed:
        say(render_rows(rows))
        raise SmokeFailed(SmokeStep.PREFLIGHT, failure_summary(failed) + " (see `spotshift aws check`)")
    say(f"preflight: {len(rows)} checks passed ({bucket}, {region}); " + "; ".join(quota_summary(rows)))
    return rows


def _offer_and_estimate(clients: Clients, settings: Settings, region: str, rows: list, options: SmokeOptions,
                        now: datetime, say) -> SmokeEstimate:
    from spotshift.aws.images import settings_resolver
    from spotshift.aws.smoke import choose_region_offer
    from spotshift.smoke import estimate_smoke_cost

    image = settings_resolver(settings, clients)(region)
    choice = choose_region_offer(clients, region, rows, image.supports, now)
    if choice.offer is None:
        raise SmokeFailed(SmokeStep.OFFER, f"none of the {choice.considered} GPU spot offers of {region} is usable"
                          + (f": {'; '.join(choice.skipped)}" if choice.skipped else ""))
    o = choice.offer
    say(f"offer: {o.instance_type} ({o.gpu_count}x {o.gpu}) spot in {o.zone} at ${o.usd_per_hour:.4f}/h, the "
        f"cheapest usable of {choice.considered} GPU spot offers in {region}")
    for line in choice.skipped:
        say(f"  skipped (cheaper): {line}")
    estimate = estimate_smoke_cost(o, options.assumptions)
    say(f"estimate: ${estimate.total_usd:.4f} (cap ${options.max_usd:.2f}) for {options.assumptions.describe()}")
    return estimate


def _confirmed(confirm: Callable[[str], bool] | None, estimate: SmokeEstimate, say) -> bool:
    question = (f"Launch {estimate.offer.instance_type} spot in {estimate.offer.region} for about "
                f"${estimate.total_usd:.2f}? [y/N] ")
    if confirm is None:
        if not sys.stdin.isatty():
            say("not launched: pass --yes to launch without a prompt")
            return False
        confirm = lambda q: input(q).strip().lower() in ("y", "yes")  # noqa: E731
    if confirm(question):
        return True
    say("not launched (not confirmed)")
    return False


def _launch_and_verify(options: SmokeOptions, estimate: SmokeEstimate, settings: Settings, clients: Clients,
                       runtime_factory, timeline: SmokeTimeline, clock, say) -> SmokeReport:
    """Inputs, the train-job flow with the smoke's backend, then the checks; the instances of the
    smoke's job are terminated and the job ended whatever happens (Ctrl-C included)."""
    from flows.runtime import Runtime
    from spotshift.aws.smoke import SmokeBackend
    from spotshift.models import new_id
    from training.contract import JobPaths

    rt = (runtime_factory or Runtime.from_settings)(settings)
    job_id = new_id("smoke")
    paths = JobPaths(rt.settings.bucket, job_id)
    backend = SmokeBackend(rt.backend, s3=rt.s3, paths=paths, clock=clock, timeline=timeline,
                           usd_per_hour=estimate.offer.usd_per_hour, max_usd=options.max_usd,
                           assumptions=options.assumptions, observe_every_s=rt.poll_seconds / 2)
    # each step lasts at least one monitor poll: the checkpoint is seen while training goes on; no
    # market history: the smoke's own interruption is not a spot outlook for later jobs. The policy
    # is spot-only by design (SMOKE_POLICY): the default one never launches a job without on-demand
    smoke_rt = replace(rt, backend=backend, clock=clock, history=None, min_step_seconds=rt.poll_seconds,
                       policy=SMOKE_POLICY)
    failure: SmokeFailed | None = None
    try:
        try:
            _submit(smoke_rt, job_id, paths, estimate, options, timeline, clock, say)
            from flows.controller import run_job

            say(f"job {job_id}: train-job flow run, then fleet passes and their action runs (watch them in the "
                "Prefect UI)")
            run_job(job_id, runtime=smoke_rt, on_pass=backend.poll)
        except SmokeFailed as exc:
            failure = exc
        except KeyboardInterrupt:
            failure = SmokeFailed(backend.step if "inputs_ready" in timeline.marks else SmokeStep.INPUTS,
                                  "interrupted (Ctrl-C)")
        except Exception as exc:  # noqa: BLE001 - any failure of the flow is this step's failure
            failure = SmokeFailed(backend.step if "inputs_ready" in timeline.marks else SmokeStep.INPUTS,
                                  f"{type(exc).__name__}: {exc}")
        finally:
            notes = _cleanup(smoke_rt, job_id, failure)
        report = _verify(smoke_rt, job_id, paths, clients, estimate, options, timeline, backend, failure, notes, clock)
    finally:
        if runtime_factory is None:
            rt.backend.close()
    return report


def _submit(rt, job_id: str, paths, estimate: SmokeEstimate, options: SmokeOptions, timeline: SmokeTimeline,
            clock, say) -> None:
    """The tiny model and its dataset in the job's prefix, and the job in the job store."""
    from spotshift.aws.smoke import upload_inputs
    from spotshift.smoke import smoke_job_request

    timeline.mark("inputs", clock())
    try:
        from training.tiny_model import build_tiny_model, write_demo_dataset
    except ImportError as exc:  # pragma: no cover - the venv has them
        raise SmokeFailed(SmokeStep.INPUTS, f"the smoke builds its tiny model here and needs the train extra "
                                            f"(pip install -e '.[train]'): {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="spotshift-smoke-") as tmp:
        dataset = write_demo_dataset(Path(tmp) / "corpus.jsonl", lines=200, seed=0)
        try:
            model_dir = build_tiny_model(Path(tmp) / "model", dataset, layers=2, hidden=32, vocab_size=256)
        except ImportError as exc:
            raise SmokeFailed(SmokeStep.INPUTS, f"the smoke builds its tiny model here and needs the train extra "
                                                f"(pip install -e '.[train]'): {exc}") from exc
        model, data = upload_inputs(rt.s3, paths, model_dir, dataset)
    timeline.mark("inputs_ready", clock())
    say(f"inputs: tiny model {model}, dataset {data}")
    request = smoke_job_request(estimate.offer, model=model, dataset=data, max_usd=options.max_usd, now=clock(),
                                key=f"smoke-{job_id}")
    rt.jobs.create(request, now=clock(), job_id=job_id)


def _cleanup(rt, job_id: str, failure: SmokeFailed | None) -> list[str]:
    """Terminate every instance of the smoke's job and close its workloads; end the job if the flow
    did not (a Ctrl-C leaves a crashed run, whose job a fleet pass would adopt and launch again)."""
    from flows.hooks import terminate_job_instances
    from spotshift.models import JobStatus, JobUpdate
    from spotshift.stores import InvalidTransition, JobNotFound

    notes = []
    try:
        stopped = terminate_job_instances(rt, job_id, "spotshift aws smoke ended")
        if stopped:
            notes.append(f"terminated {', '.join(stopped)}")
    except Exception as exc:  # noqa: BLE001 - reported (the check after it fails on what is left), never hidden
        notes.append(f"terminating the job's instances failed: {type(exc).__name__}: {exc}")
    try:
        job = rt.jobs.get(job_id)
        if not job.status.terminal:
            error = str(failure) if failure else "the smoke ended"
            rt.jobs.transition(job_id, JobStatus.FAILED, now=rt.clock(), update=JobUpdate(error=error[:500]),
                               message="spotshift aws smoke ended it")
    except (JobNotFound, InvalidTransition):
        pass
    return notes


def _verify(rt, job_id: str, paths, clients: Clients, estimate: SmokeEstimate, options: SmokeOptions,
            timeline: SmokeTimeline, backend, failure: SmokeFailed | None, notes: list[str], clock) -> SmokeReport:
    """What the smoke proves, read back from EC2, the ledger and S3: nothing of the job left running,
    one interruption and one resume from its checkpoint, 20 steps, the final model, the cost."""
    from spotshift.aws.smoke import alive_spotshift_instances
    from spotshift.models import EndReason
    from spotshift.smoke import CHECKPOINT_STEP, SMOKE_STEPS, cost_verdict, workloads_cost
    from training.contract import FINAL, read_progress

    region = options.region
    left = [i.instance_id for i in backend.inner.list(job_id)]
    others = [i.instance_id for i in alive_spotshift_instances(clients("ec2", region)) if i.job_id != job_id]
    timeline.mark("cleaned", clock())
    if others:
        notes.append(f"other spotshift instances run in {region} (other jobs, left alone): {', '.join(others)}")
    # a launch refused before its instance started leaves a row without one: no instance, no bill
    workloads = tuple(sorted((w for w in rt.ledger.workloads(job_id) if w.instance_id), key=lambda w: w.started_at))
    cost = workloads_cost(workloads, options.assumptions)

    def check() -> SmokeFailed | None:
        if left:
            return SmokeFailed(SmokeStep.CLEANUP, f"still running after the smoke: {', '.join(left)}")
        if failure is not None:
            return failure
        job = rt.jobs.get(job_id)
        if job.status.value != "succeeded":
            return SmokeFailed(backend.step, f"the job ended {job.status.value}: {job.error or 'no error recorded'}")
        if not backend.interrupted or len(workloads) != 2 or workloads[0].end_reason is not EndReason.PREEMPTED:
            return SmokeFailed(SmokeStep.INTERRUPT, f"expected one interruption and one resume, the ledger has "
                               f"{[(w.instance_id, str(w.end_reason)) for w in workloads]}")
        progress = read_progress(rt.s3, paths.output)
        resumed = progress.resumed_from_step if progress else None
        seen = timeline.checkpoint_step or CHECKPOINT_STEP
        if progress is None or progress.instance_id != workloads[1].instance_id or resumed is None \
                or not seen <= resumed < SMOKE_STEPS:
            return SmokeFailed(SmokeStep.RESUME, f"the second instance did not resume from the checkpoint at step "
                               f">= {seen}: its heartbeat says {progress.model_dump_json() if progress else None}")
        timeline.resumed_from_step = resumed
        if progress.state.value != "done" or progress.step != SMOKE_STEPS:
            return SmokeFailed(SmokeStep.FINISH, f"training ended {progress.state.value} at step {progress.step}, "
                               f"not done at {SMOKE_STEPS}")
        if not rt.s3.list_objects_v2(Bucket=paths.bucket, Prefix=paths.key(FINAL), MaxKeys=1).get("KeyCount"):
            return SmokeFailed(SmokeStep.FINISH, f"no final model under {paths.final_uri}")
        return cost_verdict(cost, options.max_usd)

    return SmokeReport(region, options.max_usd, offer=estimate.offer, estimate=estimate, timeline=timeline,
                       workloads=workloads, cost=cost, job_id=job_id, failure=check(), notes=tuple(notes))
