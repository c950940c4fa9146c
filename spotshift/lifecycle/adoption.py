"""Adopting a job whose flow run died: from the ledger and the instances tagged with the job, decide
which instance goes on training it, which are stopped, and which ledger rows are closed, so that
exactly one instance trains the job and the ledger matches EC2 again. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from spotshift.instances import GONE_STATES, RUNNING_STATES, SPOT_INTERRUPTION_REASONS, InstanceInfo
from spotshift.lifecycle.migration import roll_forward
from spotshift.models import EndReason, Migration, Workload


@dataclass(frozen=True)
class Adoption:
    """What an adopting run does before it goes on: watch `keep` (None = resume from the checkpoint
    on a new placement), stop `stop`, close `close` (workload -> why it ended), and record the
    migrations that were in flight, rolled forward to their final state (`finish`: the rows to
    store as they are)."""

    keep: Workload | None
    stop: tuple[InstanceInfo, ...] = ()
    close: tuple[tuple[Workload, EndReason], ...] = ()
    finish: tuple[Migration, ...] = field(default_factory=tuple)


def _lost_reason(instance: InstanceInfo | None) -> EndReason:
    """Why a workload whose instance is gone ended: spot took it back, or it is unknown (FAILED)."""
    spot_reclaimed = instance is not None and instance.state_reason in SPOT_INTERRUPTION_REASONS
    return EndReason.PREEMPTED if spot_reclaimed else EndReason.FAILED


def plan_adoption(workloads: Sequence[Workload], instances: Sequence[InstanceInfo], migrations: Sequence[Migration],
                  current_workload_id: str | None, trainer_exited: bool, *, now: datetime) -> Adoption:
    """The job's ledger rows and tagged instances -> an Adoption.

    Rules: an open workload whose instance is alive is a candidate; the job's current workload
    wins, else the newest candidate (a move in flight had launched its target). A candidate whose
    trainer already exited after a checkpoint (`trainer_exited`, read from progress.json for the
    current one) is not kept. Every other alive instance of the job is stopped; every other open
    workload is closed (MIGRATED when a newer one is kept, else as lost). A migration still in
    flight is rolled forward at `now` (spotshift.lifecycle.migration.roll_forward): recorded when
    its target is the one kept, else rolled back (abandoned before its checkpoint)."""
    by_workload = {i.workload_id: i for i in instances if i.workload_id}
    alive = {wid: i for wid, i in by_workload.items() if i.state in RUNNING_STATES}
    open_rows = sorted((w for w in workloads if w.open), key=lambda w: w.started_at)
    candidates = [w for w in open_rows if w.id in alive]
    keep = next((w for w in candidates if w.id == current_workload_id), candidates[-1] if candidates else None)
    if keep is not None and keep.id == current_workload_id and trainer_exited:
        keep = None
    if keep is not None and keep.instance_id is None:
        keep = keep.model_copy(update={"instance_id": alive[keep.id].instance_id})
    stop = tuple(i for wid, i in alive.items() if keep is None or wid != keep.id)
    stop += tuple(i for i in instances if i.workload_id is None and i.state not in GONE_STATES)
    close = tuple(
        (w, EndReason.MIGRATED if keep is not None and keep.started_at >= w.started_at else
         _lost_reason(by_workload.get(w.id)))
        for w in open_rows if keep is None or w.id != keep.id)
    finish = tuple(_finished(m, keep, now) for m in migrations if not m.state.terminal)
    return Adoption(keep=keep, stop=stop, close=close, finish=finish)


def _finished(m: Migration, keep: Workload | None, now: datetime) -> Migration:
    """A migration in flight when the run died, at its final state: recorded when the kept workload
    is its target (or, its target not yet recorded, was started after it began)."""
    return roll_forward(m, keep, at=now)
