"""The controller in one process, for a job run here (`spotshift submit --here`, `make demo`, tests):
place the job (train-job), then a fleet pass every poll interval with its actions carried out in
this process, and a continuous-scout every re-scout interval, until the jobs have ended. With a
work pool the same flows run as deployments instead: `fleet` on its schedule starting `job-action`
runs, `continuous-scout` starting `migrate-job` runs (prefect.yaml)."""

from __future__ import annotations

import time
from typing import Callable, Iterable

from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

from flows.continuous_scout import continuous_scout
from flows.fleet import fleet
from flows.runtime import Runtime
from flows.train_job import summary, train_job


def run_until_ended(rt: Runtime, job_ids: Iterable[str], *, max_passes: int | None = None,
                    on_pass: Callable[[], object] | None = None) -> int:
    """Fleet passes (every rt.poll_seconds, on rt.sleep) and re-scouts (after rt.rescout_seconds of
    those sleeps; None: none) until every job in `job_ids` has ended; returns the passes made. No
    other process acts on these jobs meanwhile, so a job found between two states was left there
    by a run that died: it is adopted at once (lease 0). `on_pass`: called before each pass (the
    smoke's backend watches its script there)."""
    ids = list(job_ids)
    passes, waited = 0, 0.0
    # Prefect's flow-run heartbeats (a thread each run joins on exit: up to a second per pass) watch
    # for runs whose process died; here that process is this one, and its own runs end with it
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        while max_passes is None or passes < max_passes:
            began = time.monotonic()
            if on_pass is not None:
                on_pass()
            fleet(runtime=rt, act_here=True, lease_seconds=0.0)
            passes += 1
            if all(rt.jobs.get(job_id).status.terminal for job_id in ids):
                break
            if rt.rescout_seconds is not None and waited >= rt.rescout_seconds:
                continuous_scout(runtime=rt)
                waited = 0.0
            rt.sleep(rt.poll_seconds)
            # the interval, or the wall time the pass took when longer (a lockstep clock's sleeps
            # take no wall time: there every sleep is one interval)
            waited += max(rt.poll_seconds, time.monotonic() - began)
    return passes


def run_job(job_id: str, runtime: Runtime, on_pass: Callable[[], object] | None = None) -> dict:
    """Place the job and drive it to its end in this process; its summary."""
    train_job(job_id, runtime=runtime)
    run_until_ended(runtime, [job_id], on_pass=on_pass)
    return summary(runtime, job_id)
