"""Which spotshift-tagged instances no live job owns: the reaper's decision, pure."""

from __future__ import annotations

from typing import Iterable

from spotshift.instances import GONE_STATES, InstanceInfo


def find_orphans(instances: Iterable[InstanceInfo], live_job_ids: set[str]) -> list[InstanceInfo]:
    """The spotshift-tagged, not yet terminated instances whose job is not live (untagged ones are
    never ours to touch)."""
    return [
        i for i in instances
        if i.job_id is not None and i.job_id not in live_job_ids and i.state not in GONE_STATES
    ]
