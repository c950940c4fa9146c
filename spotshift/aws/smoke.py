"""`spotshift aws smoke` against AWS: the region's usable GPU spot offers, the smoke's inputs in the
job's prefix, and the compute backend that plays its script (interrupt once, resume once) over a real one."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

from spotshift.aws.check import CheckRow
from spotshift.aws.compute import ComputeBackend, InstanceEvent
from spotshift.aws.ec2 import LaunchedInstance, LaunchRequest, find_instances
from spotshift.instances import InstanceInfo
from spotshift.aws.quotas import quota_for
from spotshift.market.aws import AwsMarket
from spotshift.market.query import OfferQuery
from spotshift.models import Market
from spotshift.smoke import (
    CHECKPOINT_STEP, OfferChoice, SmokeAssumptions, SmokeFailed, SmokeStep, SmokeTimeline, billed, choose_smoke_offer,
    cost_of,
)
from training.contract import JobPaths, Progress, TrainerState, read_latest, read_progress

log = logging.getLogger(__name__)
Clients = Callable[[str, str], Any]  # (service, region) -> boto3 client
INTERRUPT_REASON = "spotshift aws smoke: interrupted after its checkpoint, as a spot preemption would"


def spot_quota_vcpus(rows: Sequence[CheckRow], region: str, instance_types: set[str]) -> dict[str, float | None]:
    """Instance type -> the vCPUs of the spot quota it counts against, as the region's check rows
    read it (None: unknown)."""
    readings = {r.quota.quota.code: r.quota.vcpus for r in rows if r.quota is not None and r.region == region}
    return {t: readings.get(quota_for(t, Market.SPOT).code) for t in instance_types}


def choose_region_offer(clients: Clients, region: str, rows: Sequence[CheckRow], supported: Callable[[str], bool],
                        now: datetime) -> OfferChoice:
    """The region's cheapest usable GPU spot offer: the scout's market (EC2 spot price history of
    every catalog GPU type the region offers), the check's quotas, the image's families."""
    snapshot = AwsMarket(clients, placement_scores=False).snapshot(
        OfferQuery(regions=(region,), markets=(Market.SPOT,)), now)
    if region in snapshot.failed_regions:
        raise SmokeFailed(SmokeStep.OFFER, f"the spot market of {region} could not be read: "
                                           f"{snapshot.failed_regions[region]}")
    quotas = spot_quota_vcpus(rows, region, {o.instance_type for o in snapshot.offers})
    return choose_smoke_offer(snapshot.offers, quota_vcpus=quotas, supported=supported)


def upload_inputs(s3: Any, paths: JobPaths, model_dir: Path, dataset: Path) -> tuple[str, str]:
    """The tiny model and its dataset under the job's own prefix, where submit puts a local model or
    dataset (JobPaths.input_prefix) and the trainer's role reads; (model URI, dataset URI)."""
    model, data = paths.input_prefix("model"), paths.input_prefix("dataset") + dataset.name
    for path in sorted(model_dir.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), paths.bucket, model + path.relative_to(model_dir).as_posix())
    s3.upload_file(str(dataset), paths.bucket, data)
    return f"s3://{paths.bucket}/{model}", f"s3://{paths.bucket}/{data}"


def alive_spotshift_instances(ec2: Any) -> list[InstanceInfo]:
    """Every spotshift-tagged instance of the client's region that is not gone (pending to stopped)."""
    return find_instances(ec2)


class SmokeBackend:
    """A ComputeBackend that plays the smoke's script over a real one (EC2, or the local backend):

        start 1 -> its trainer checkpoints at step >= 10 (LATEST.json) -> stop 1, as a spot
        preemption would -> the flow re-plans -> start 2 -> it resumes from that checkpoint
        -> done -> the flow stops it

    and raises SmokeFailed naming the step for anything else: a second start before the interruption
    (the first instance was lost or its trainer failed), a third start, or the instances' cost so far
    (at the offer's price plus EBS and public IPv4) passing the cap. The flow fails on it, and its
    failure hook terminates the job's instances. It observes S3 at most every `observe_every_s`."""

    def __init__(self, inner: ComputeBackend, *, s3: Any, paths: JobPaths, clock: Callable[[], datetime],
                 timeline: SmokeTimeline, usd_per_hour: float, max_usd: float,
                 assumptions: SmokeAssumptions = SmokeAssumptions(), checkpoint_step: int = CHECKPOINT_STEP,
                 observe_every_s: float = 1.0) -> None:
        self.inner = inner
        self._s3 = s3
        self._paths = paths
        self._clock = clock
        self.timeline = timeline
        self._usd_per_hour = usd_per_hour
        self._max_usd = max_usd
        self._assumptions = assumptions
        self._checkpoint_step = checkpoint_step
        self._observe_every_s = observe_every_s
        self._lock = threading.RLock()
        self.launched: list[LaunchedInstance] = []
        self._workloads: list[str] = []
        self._running_at: dict[str, datetime] = {}
        self._stopped_at: dict[str, datetime] = {}
        self._exit_codes: dict[str, int | None] = {}
        self._progress: Progress | None = None
        self._observed_at = float("-inf")
        self.interrupted = False

    # --- where the script is -----------------------------------------------------------------

    @property
    def step(self) -> SmokeStep:
        """The step the smoke is in now (a failure is reported in it)."""
        marks = self.timeline.marks
        if not self.launched:
            return SmokeStep.LAUNCH
        if not self.interrupted:
            return SmokeStep.CHECKPOINT if "checkpoint_1" not in marks else SmokeStep.INTERRUPT
        return SmokeStep.RESUME if "heartbeat_2" not in marks else SmokeStep.FINISH

    def _why_ended(self, instance_id: str) -> str:
        """What the orchestrator knows of how an instance ended: its trainer's last report and exit code."""
        parts = []
        p = self._progress
        if p is not None and p.instance_id == instance_id:
            parts.append(f"its trainer reported {p.state.value} at step {p.step}" + (f": {p.error}" if p.error else ""))
        else:
            parts.append("its trainer never reported")
        if self._exit_codes.get(instance_id) is not None:
            parts.append(f"exit code {self._exit_codes[instance_id]}")
        return f"{', '.join(parts)} (log: {self._log_of(instance_id)})"

    def _log_of(self, instance_id: str) -> str:
        log_path = getattr(self.inner, "log_path", None)
        return str(log_path(instance_id)) if log_path is not None else self._paths.uri(
            self._paths.log_key(instance_id).removeprefix(self._paths.prefix))

    # --- ComputeBackend ------------------------------------------------------------------------

    def start(self, request: LaunchRequest) -> LaunchedInstance:
        with self._lock:
            if request.workload_id not in self._workloads:  # a retried start of the same workload passes
                self._admit(request)
                self._workloads.append(request.workload_id)
        n = len(self._workloads)
        self.timeline.mark(f"launch_{n}", self._clock())
        launched = self.inner.start(request)
        with self._lock:
            if launched.instance_id not in self._running_at:
                self.launched.append(launched)
                self._running_at[launched.instance_id] = self._clock()
                self.timeline.mark(f"running_{n}", self._running_at[launched.instance_id])
        return launched

    def _admit(self, request: LaunchRequest) -> None:
        """Raise SmokeFailed for a launch the script does not expect."""
        self._observe(force=True)
        if len(self._workloads) == 1 and not self.interrupted:
            first = self.launched[0].instance_id if self.launched else "the first instance"
            raise SmokeFailed(SmokeStep.CHECKPOINT, f"{first} ended before a checkpoint at step {self._checkpoint_step}"
                                                    f" or later: {self._why_ended(first)}")
        if len(self._workloads) >= 2:
            second = self.launched[-1].instance_id
            raise SmokeFailed(self.step, f"the resumed instance {second} ended before training reached the end: "
                                         f"{self._why_ended(second)}")

    def stop(self, instance_id: str, reason: str) -> None:
        self.inner.stop(instance_id, reason)
        with self._lock:
            self._stopped_at.setdefault(instance_id, self._clock())
            if len(self.launched) >= 2 and instance_id == self.launched[1].instance_id:
                self.timeline.mark("finished", self._stopped_at[instance_id])

    def state(self, instance_id: str) -> str:
        state = self.inner.state(instance_id)
        self._observe()
        self._guard()
        return state

    def list(self, job_id: str | None = None) -> list[InstanceInfo]:
        return self.inner.list(job_id)

    def poll(self) -> list[InstanceEvent]:
        events = self.inner.poll()
        with self._lock:
            for e in events:
                if e.kind in ("exited", "preempted"):
                    self._exit_codes[e.instance_id] = e.exit_code
        self._observe()
        if self._due_for_interruption():
            self._interrupt()
        self._guard()
        return events

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:  # preflight, launch_env, log_path...: the inner backend's
        return getattr(self.inner, name)

    # --- the script ----------------------------------------------------------------------------

    def _observe(self, force: bool = False) -> None:
        """Read the heartbeat (and, before the interruption, the checkpoint manifest) and note what
        the script waits for: each instance's first heartbeat, the checkpoint, the resumed step."""
        now_s = time.monotonic()
        if not self.launched or (not force and now_s - self._observed_at < self._observe_every_s):
            return
        self._observed_at = now_s
        progress = read_progress(self._s3, self._paths.output)
        now = self._clock()
        with self._lock:
            self._progress = progress
            for n, launched in enumerate(self.launched[:2], 1):
                if progress is not None and progress.instance_id == launched.instance_id and \
                        progress.state is not TrainerState.starting:
                    self.timeline.mark(f"heartbeat_{n}", now)
                    if n == 2 and self.timeline.resumed_from_step is None:
                        self.timeline.resumed_from_step = progress.resumed_from_step
            if self.interrupted or "checkpoint_1" in self.timeline.marks:
                return
        latest = read_latest(self._s3, self._paths.output)
        if latest is not None and latest.step >= self._checkpoint_step:
            with self._lock:
                self.timeline.checkpoint_step = latest.step
                self.timeline.mark("checkpoint_1", now)

    def _due_for_interruption(self) -> bool:
        return not self.interrupted and "checkpoint_1" in self.timeline.marks and len(self.launched) == 1

    def _interrupt(self) -> None:
        """Terminate the first instance: its trainer gets the SIGTERM a preemption sends, the
        instance goes away; the flow's monitor sees it lost and recovers."""
        first = self.launched[0].instance_id
        self.timeline.mark("interrupt_1", self._clock())
        log.warning("smoke: terminating %s after its checkpoint at step %s", first, self.timeline.checkpoint_step)
        self.stop(first, INTERRUPT_REASON)
        self.interrupted = True
        self.timeline.mark("interrupted_1", self._clock())

    def spent_usd(self) -> float:
        """The instances' cost so far (billed seconds at the offer's price, EBS, public IPv4)."""
        now = self._clock()
        with self._lock:
            stints = [(billed((self._stopped_at.get(i, now) - at).total_seconds()), self._usd_per_hour)
                      for i, at in self._running_at.items()]
        return cost_of(stints, self._assumptions).total_usd

    def _guard(self) -> None:
        spent = self.spent_usd()
        if spent > self._max_usd:
            raise SmokeFailed(self.step, f"the instances have cost ${spent:.4f} so far, past the cap of "
                                         f"${self._max_usd:.2f}, before the {self.step.value} step finished")
