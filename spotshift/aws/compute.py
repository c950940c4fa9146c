"""The compute backend Protocol (start, stop, watch instances) and the registry of backends by name.

`ec2` runs on real EC2; `local` (the embedded default) runs the trainer as a local process behind
an instance of the moto server's EC2.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from spotshift.aws.ec2 import LaunchedInstance, LaunchRequest
from spotshift.instances import InstanceInfo

EventKind = Literal["interruption_notice", "preempted", "exited"]


class InstanceEvent(BaseModel):
    """Something that happened to an instance the backend started.

    interruption_notice: the spot capacity is being taken back; the trainer was told (SIGTERM /
        instance-action) and should checkpoint and exit 75.
    preempted: the instance is gone after an interruption (exit_code when the backend saw it).
    exited: the trainer ended on its own (exit_code 0 done, 1 failed, 75 checkpointed-and-stopped;
        None when the backend cannot see the process, as on real EC2).
    """

    model_config = ConfigDict(frozen=True)

    kind: EventKind
    instance_id: str
    job_id: str
    workload_id: str
    zone: str
    at: datetime
    exit_code: int | None = None
    detail: str = ""


@runtime_checkable
class CapacityOracle(Protocol):
    """Whether a zone has spot capacity at a moment (the ReplayMarket answers this)."""

    def available(self, zone: str, now: datetime) -> bool: ...


@runtime_checkable
class ComputeBackend(Protocol):
    """Where instances run. start() returns once the instance is running."""

    def start(self, request: LaunchRequest) -> LaunchedInstance: ...

    def stop(self, instance_id: str, reason: str) -> None: ...

    def state(self, instance_id: str) -> str: ...

    def list(self, job_id: str | None = None) -> list[InstanceInfo]: ...

    def poll(self) -> list[InstanceEvent]: ...

    def close(self) -> None: ...


BACKEND_NAMES = ("ec2", "local")


def make_backend(name: str, **deps: Any) -> ComputeBackend:
    """The backend called `name` ("ec2" or "local"), built from its dependencies (see each class)."""
    if name == "ec2":
        from spotshift.aws.ec2_backend import Ec2Backend

        return Ec2Backend(**deps)
    if name == "local":
        from spotshift.aws.local_backend import LocalBackend

        return LocalBackend(**deps)
    raise ValueError(f"unknown compute backend {name!r}. Choose between {', '.join(BACKEND_NAMES)}")
