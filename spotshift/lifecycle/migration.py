"""The migration state machine: a move (checkpoint now -> start elsewhere -> first step -> stop the
old instance) or a recovery (the instance was lost: resume from the last checkpoint elsewhere), as
one Migration row whose `state` only moves forward along TRANSITIONS. The flows persist every step
(tasks.migration.record_migration_step); an adopting run rolls a migration still in flight forward
(roll_forward). Pure: no clock reads, the caller passes `at`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from spotshift.models import Migration, MigrationReason, MigrationState, Workload

S = MigrationState

# state -> the states it may go to next
TRANSITIONS: dict[MigrationState, frozenset[MigrationState]] = {
    S.REQUESTED: frozenset({S.CHECKPOINTED, S.ABANDONED}),
    S.CHECKPOINTED: frozenset({S.LAUNCHED, S.ROLLED_BACK}),
    # launched -> launched: a re-launch (a new to_workload_id) after the new instance never trained
    S.LAUNCHED: frozenset({S.LAUNCHED, S.FIRST_STEP_SEEN, S.ROLLED_BACK}),
    # first_step_seen -> recorded: a recovery, whose old instance was already gone
    S.FIRST_STEP_SEEN: frozenset({S.OLD_STOPPED, S.RECORDED}),
    S.OLD_STOPPED: frozenset({S.RECORDED}),
    S.RECORDED: frozenset(),
    S.ABANDONED: frozenset(),
    S.ROLLED_BACK: frozenset(),
}

# where a migration may begin: a move asks for a checkpoint; a recovery resumes from the last one
ENTRY_STATES = frozenset({S.REQUESTED, S.CHECKPOINTED})

# the states a migration is in once its new workload is known
_WITH_TARGET = frozenset({S.LAUNCHED, S.FIRST_STEP_SEEN, S.OLD_STOPPED, S.RECORDED})


class IllegalMigrationStep(ValueError):
    """A step the state machine does not allow; names the states allowed from where it stands."""

    def __init__(self, migration_id: str, from_state: MigrationState, to: MigrationState):
        self.migration_id, self.from_state, self.to = migration_id, from_state, to
        self.allowed = sorted(TRANSITIONS[from_state], key=list(MigrationState).index)
        then = ", ".join(s.value for s in self.allowed) if self.allowed else f"nothing ({from_state.value} is final)"
        super().__init__(f"migration {migration_id} cannot go from {from_state.value} to {to.value}; "
                         f"from {from_state.value} it may go to {then}")


def can_advance(current: MigrationState, to: MigrationState) -> bool:
    return to in TRANSITIONS[current]


def begin(job_id: str, old: Workload, reason: MigrationReason, *, at: datetime, expected_saving_usd: float = 0.0,
          state: MigrationState = S.REQUESTED) -> Migration:
    """A migration of `job_id` away from the workload `old`, begun at `at`: a move starts
    `requested` (the old trainer was asked for a checkpoint), a recovery after the instance was lost
    `checkpointed` (it resumes from the last checkpoint)."""
    if state not in ENTRY_STATES:
        raise ValueError(f"a migration begins {' or '.join(sorted(s.value for s in ENTRY_STATES))}, not {state.value}")
    return Migration(job_id=job_id, from_workload_id=old.id, reason=reason, expected_saving_usd=expected_saving_usd,
                     started_at=at, state=state)


def advance(m: Migration, to: MigrationState, *, at: datetime, checkpoint_step: int | None = None,
            to_workload_id: str | None = None) -> Migration:
    """`m` one step on, at `at` (raises IllegalMigrationStep for a step TRANSITIONS does not allow).
    `checkpoint_step` and `to_workload_id`, when given, are recorded. The other fields follow the
    state: succeeded and finished_at stay None until it is terminal; recorded: succeeded, finished
    at `at`; first_step_seen: the downtime is `at` - started_at; abandoned and rolled_back: not
    succeeded, finished at `at`."""
    if not can_advance(m.state, to):
        raise IllegalMigrationStep(m.id, m.state, to)
    if at < m.started_at:
        raise ValueError(f"migration {m.id}: {to.value} at {at.isoformat()} is before it began "
                         f"({m.started_at.isoformat()})")
    update: dict[str, Any] = {"state": to, "succeeded": None, "finished_at": None}
    if checkpoint_step is not None:
        update["checkpoint_step"] = checkpoint_step
    if to_workload_id is not None:
        update["to_workload_id"] = to_workload_id
    if to is S.CHECKPOINTED and update.get("checkpoint_step", m.checkpoint_step) is None:
        raise ValueError(f"migration {m.id}: checkpointed needs the checkpoint's step")
    if to is S.LAUNCHED:
        if to_workload_id is None:
            raise ValueError(f"migration {m.id}: launched needs the new workload (to_workload_id)")
        if m.state is S.LAUNCHED and to_workload_id == m.to_workload_id:
            raise ValueError(f"migration {m.id}: a re-launch needs a new workload, not {to_workload_id} again")
    if to is S.FIRST_STEP_SEEN:
        update["downtime_seconds"] = (at - m.started_at).total_seconds()
    if to.terminal:
        update["succeeded"] = to is S.RECORDED
        update["finished_at"] = at
    return _checked(m, update)


def roll_forward(m: Migration, kept: Workload | None, *, at: datetime) -> Migration:
    """What an adopting run (after a crash) makes of `m` when `kept` is the workload that goes on
    training the job (None: none does). recorded, with `kept` as its target, when `kept` is its
    target (or its target was not recorded yet and `kept` started after it began and is not its
    source); else rolled_back, or abandoned when it was still `requested`. A finished migration
    comes back unchanged."""
    if m.state.terminal:
        return m
    ok = kept is not None and (m.to_workload_id == kept.id or
                               (m.to_workload_id is None and kept.id != m.from_workload_id
                                and kept.started_at >= m.started_at))
    if ok:
        to, update = S.RECORDED, {"to_workload_id": kept.id}
    else:
        to, update = (S.ABANDONED if m.state is S.REQUESTED else S.ROLLED_BACK), {}
    return _checked(m, {**update, "state": to, "succeeded": ok, "finished_at": max(at, m.started_at)})


def _checked(m: Migration, update: dict[str, Any]) -> Migration:
    """`m` with `update`, validated again (the row's own constraints: no negative downtime, a target
    other than the source)."""
    new = Migration.model_validate({**m.model_dump(), **update})
    if new.to_workload_id is not None and new.to_workload_id == new.from_workload_id:
        raise ValueError(f"migration {m.id}: the new workload is the one it moves from ({new.from_workload_id})")
    if new.state in _WITH_TARGET and new.to_workload_id is None:
        raise ValueError(f"migration {m.id}: {new.state.value} needs the new workload (to_workload_id)")
    return new
