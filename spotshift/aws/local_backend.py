"""The embedded compute backend: each instance is a real instance of the moto server's EC2 (ids,
tags, states) whose machine is a local process running the trainer the user-data would run.

Spot interruptions follow a CapacityOracle (the ReplayMarket) read at the clock's `now`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Callable, Mapping, Sequence

from spotshift.aws.compute import CapacityOracle, InstanceEvent
from spotshift.aws.ec2_backend import DEFAULT_REGIONS, Ec2Backend
from spotshift.aws.launch_env import LaunchEnvironment
from spotshift.aws.moto_env import client, local_env
from spotshift.aws.ec2 import LaunchedInstance, LaunchRequest
from spotshift.instances import InstanceInfo
from spotshift.aws.errors import SpotshiftAwsError
from spotshift.clock import wall_clock
from spotshift.models import Market

log = logging.getLogger(__name__)

MOTO_IMAGE_ID = "ami-999844e0"  # "Deep Learning AMI Amazon Linux" in moto's default images, every region
DEFAULT_TRAINER_CMD: tuple[str, ...] = (sys.executable, "-m", "training")


def trainer_command(
    trainer_cmd: Sequence[str], spec_uri: str, instance_id: str, endpoint_url: str, s3_region: str,
    base_env: Mapping[str, str], credentials: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of a local trainer (pure). No AWS_* variable of the parent
    reaches it (no real profile or key): only the moto server's dummy credentials, or `credentials`
    (an IAM user standing in for the instance role on a moto server that enforces IAM)."""
    env = {k: v for k, v in base_env.items() if not k.startswith("AWS_")}
    env.update(local_env(endpoint_url, s3_region))
    env.update(credentials or {})
    env["SPOTSHIFT_INSTANCE_ID"] = instance_id
    env["PYTHONUNBUFFERED"] = "1"
    return [*trainer_cmd, "--spec", spec_uri], env


@dataclass
class _Trainer:
    launched: LaunchedInstance
    process: subprocess.Popen
    log_file: IO[bytes]
    notice_at: float | None = None  # monotonic time the interruption notice was sent


class LocalBackend:
    """Instances in the moto server's EC2, trainers as local process groups.

    A spot interruption, as an event trace (grace_s apart at most):
      oracle: zone unavailable -> SIGTERM to the trainer (`interruption_notice`)
      -> trainer checkpoints, exits 75 (or SIGKILL at grace_s) -> instance terminated (`preempted`)
    A trainer that ends on its own -> instance terminated (`exited`, with its exit code), as the
    bootstrap's power-off would. stop() and close() leave no process behind (SIGTERM, grace, SIGKILL
    to the whole process group) and terminate the instances.
    """

    def __init__(
        self,
        endpoint_url: str,
        work_dir: Path | str,
        *,
        oracle: CapacityOracle | None = None,
        clock: Callable[[], datetime] = wall_clock,
        trainer_cmd: Sequence[str] = DEFAULT_TRAINER_CMD,
        grace_s: float = 30.0,
        watch_interval_s: float | None = 0.5,
        s3_region: str = "us-east-1",
        regions: Sequence[str] = DEFAULT_REGIONS,
        credentials: Mapping[str, str] | None = None,
        trainer_credentials: Mapping[str, str] | None = None,
        launch_env: LaunchEnvironment | None = None,
    ) -> None:
        """watch_interval_s: how often a watcher thread checks the oracle and the processes;
        None = no thread, poll() does the checking. credentials / trainer_credentials: the
        orchestrator's and the trainers' IAM users on a moto server that enforces IAM (the
        instance profile must then exist: `spotshift aws setup`); launch_env: per-region image
        and network, as on EC2."""
        self._endpoint_url = endpoint_url
        self._work_dir = Path(work_dir)
        self._work_dir.mkdir(parents=True, exist_ok=True)
        self._oracle = oracle
        self._clock = clock
        self._trainer_cmd = list(trainer_cmd)
        self._grace_s = grace_s
        self._s3_region = s3_region
        self._credentials = dict(credentials) if credentials else None
        self._trainer_credentials = dict(trainer_credentials) if trainer_credentials else None
        self._ec2 = Ec2Backend(self._client, regions=regions, wait_timeout_s=30, wait_poll_s=0.05, clock=clock,
                               launch_env=launch_env)
        self._profiles: set[str] = set()
        self._trainers: dict[str, _Trainer] = {}
        self._events: list[InstanceEvent] = []
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None
        if watch_interval_s is not None:
            self._watcher = threading.Thread(target=self._watch, args=(watch_interval_s,),
                                             name="local-backend-watcher", daemon=True)
            self._watcher.start()

    # --- ComputeBackend --------------------------------------------------------------------------

    def start(self, request: LaunchRequest) -> LaunchedInstance:
        if self._closing.is_set():
            raise RuntimeError("this LocalBackend is closed")
        if request.instance_profile and self._credentials is None:
            self._ensure_instance_profile(request.instance_profile)
        launched = self._ec2.start(request)
        with self._lock:
            if launched.instance_id in self._trainers:  # a retried start of the same workload
                return launched
            cmd, env = trainer_command(self._trainer_cmd, request.spec_uri, launched.instance_id,
                                       self._endpoint_url, self._s3_region, os.environ, self._trainer_credentials)
            log_file = open(self.log_path(launched.instance_id), "ab")
            try:
                process = subprocess.Popen(cmd, env=env, cwd=self._work_dir, stdin=subprocess.DEVNULL,
                                           stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
            except OSError:
                log_file.close()
                self._ec2.stop(launched.instance_id, "the trainer process could not start")
                raise
            self._trainers[launched.instance_id] = _Trainer(launched, process, log_file)
            self._pid_path(launched.instance_id).write_text(str(process.pid))
        return launched

    def stop(self, instance_id: str, reason: str) -> None:
        with self._lock:
            trainer = self._trainers.pop(instance_id, None)
        if trainer is not None:
            self._end_process(trainer)
        else:
            self._end_orphan(instance_id)
        self._ec2.stop(instance_id, reason)

    def state(self, instance_id: str) -> str:
        return self._ec2.state(instance_id)

    def list(self, job_id: str | None = None) -> list[InstanceInfo]:
        return self._ec2.list(job_id)

    @property
    def regions(self) -> list[str]:
        return self._ec2.regions

    def ec2_client(self, region: str):
        """The moto server's EC2 client of `region` (the fleet pass lists each region once with it)."""
        return self._ec2.ec2_client(region)

    def poll(self) -> list[InstanceEvent]:
        self._tick()
        with self._lock:
            events, self._events = self._events, []
        return events

    def close(self) -> None:
        self._closing.set()
        if self._watcher is not None:
            self._watcher.join()
        with self._lock:
            trainers, self._trainers = list(self._trainers.values()), {}
        for trainer in trainers:
            self._end_process(trainer)
            self._ec2.stop(trainer.launched.instance_id, "compute backend closed")

    def __enter__(self) -> LocalBackend:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- local details ---------------------------------------------------------------------------

    def log_path(self, instance_id: str) -> Path:
        """Where the trainer of an instance writes its stdout and stderr."""
        return self._work_dir / f"{instance_id}.log"

    def pid(self, instance_id: str) -> int | None:
        """The process (group) id of a running trainer, None when it is not running here."""
        with self._lock:
            trainer = self._trainers.get(instance_id)
            return trainer.process.pid if trainer else None

    def _pid_path(self, instance_id: str) -> Path:
        return self._work_dir / f"{instance_id}.pid"

    def _end_orphan(self, instance_id: str) -> None:
        """Terminating an instance ends its machine: also a trainer that another backend (a flow
        process that died) started. The pid file names its process group; /proc confirms it is
        still that instance's trainer before anything is signalled."""
        path = self._pid_path(instance_id)
        try:
            pid = int(path.read_text())
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        if f"SPOTSHIFT_INSTANCE_ID={instance_id}".encode() not in environ:
            return
        for signum, wait_s in ((signal.SIGTERM, self._grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, signum)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and not _is_zombie(pid):
                time.sleep(0.1)
        path.unlink(missing_ok=True)

    def _client(self, region: str):
        return client("ec2", self._endpoint_url, region, self._credentials)

    def _ensure_instance_profile(self, name: str) -> None:
        """The moto server's IAM must know the profile run_instances names (real accounts have it)."""
        if name in self._profiles:
            return
        iam = client("iam", self._endpoint_url, self._s3_region)
        existing = {p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]}
        if name not in existing:
            iam.create_instance_profile(InstanceProfileName=name)
        self._profiles.add(name)

    def _watch(self, interval_s: float) -> None:
        while not self._closing.wait(interval_s):
            try:
                self._tick()
            except SpotshiftAwsError:
                log.exception("local backend: an EC2 call of the watcher failed; trying again")

    def _tick(self) -> None:
        """Deliver interruption notices, kills after the grace period, and process exits."""
        with self._lock:
            now = self._clock() if self._trainers else None
            for instance_id, trainer in list(self._trainers.items()):
                exit_code = trainer.process.poll()
                if trainer.notice_at is None:
                    if exit_code is not None:
                        self._finish(trainer, "exited", exit_code)
                    elif self._capacity_lost(trainer.launched, now):
                        self._signal(trainer, signal.SIGTERM)
                        trainer.notice_at = time.monotonic()
                        self._events.append(self._event(trainer, "interruption_notice",
                                                        detail=f"{trainer.launched.zone} lost its spot capacity"))
                    continue
                if exit_code is None and time.monotonic() - trainer.notice_at >= self._grace_s:
                    self._signal(trainer, signal.SIGKILL)
                    exit_code = trainer.process.wait()
                if exit_code is not None:
                    self._finish(trainer, "preempted", exit_code)

    def _capacity_lost(self, launched: LaunchedInstance, now: datetime | None) -> bool:
        return (self._oracle is not None and now is not None and launched.market is Market.SPOT
                and not self._oracle.available(launched.zone, now))

    def _finish(self, trainer: _Trainer, kind: str, exit_code: int) -> None:
        instance_id = trainer.launched.instance_id
        self._signal(trainer, signal.SIGKILL)  # whatever the trainer left behind in its group
        trainer.log_file.close()
        self._pid_path(instance_id).unlink(missing_ok=True)
        del self._trainers[instance_id]
        self._events.append(self._event(trainer, kind, exit_code=exit_code))
        self._ec2.stop(instance_id, f"trainer {kind} with exit code {exit_code}")

    def _end_process(self, trainer: _Trainer) -> None:
        self._pid_path(trainer.launched.instance_id).unlink(missing_ok=True)
        self._signal(trainer, signal.SIGTERM)
        try:
            trainer.process.wait(timeout=self._grace_s)
        except subprocess.TimeoutExpired:
            pass
        self._signal(trainer, signal.SIGKILL)
        trainer.process.wait()
        trainer.log_file.close()

    @staticmethod
    def _signal(trainer: _Trainer, signum: int) -> None:
        try:
            os.killpg(trainer.process.pid, signum)
        except ProcessLookupError:
            pass  # the whole group is gone already

    def _event(self, trainer: _Trainer, kind: str, *, exit_code: int | None = None, detail: str = "") -> InstanceEvent:
        launched = trainer.launched
        return InstanceEvent(kind=kind, instance_id=launched.instance_id, job_id=launched.job_id,
                             workload_id=launched.workload_id, zone=launched.zone, at=self._clock(),
                             exit_code=exit_code, detail=detail)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True
