"""What the GET routes read (jobs, their ledger rows), kept until the store changes: on the embedded
store every read comes from an in-memory copy, reloaded when its files change."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Hashable

from spotshift.models import Job, JobStatus, Migration, Workload
from spotshift.settings import Settings

if TYPE_CHECKING:
    from spotshift.stores.tokens import TokenStore

MAX_ENTRIES = 50_000  # cached values between two changes of the store; beyond, the cache starts over


class StoreReads:
    """Reads of a JobStore and a Ledger, cached while `version()` stays the same (version None:
    no caching, every read goes to the stores, as on MongoDB and Supabase, which index them)."""

    def __init__(self, jobs, ledger, version: Callable[[], Hashable] | None = None):
        self.jobs_store, self.ledger = jobs, ledger
        self._version = version
        self._seen: Hashable = object()
        self._values: dict[Hashable, Any] = {}
        self._lock = threading.Lock()

    @property
    def in_memory(self) -> bool:
        """Reads served from in-memory copies (no network, no disk once loaded)."""
        return self._version is not None

    def cached(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """`load()`'s value for `key`, computed once per version of the store."""
        if self._version is None:
            return load()
        version = self._version()
        with self._lock:
            if version != self._seen or len(self._values) > MAX_ENTRIES:
                self._seen, self._values = version, {}
            values = self._values
        if key not in values:
            values[key] = load()
        return values[key]

    def job(self, job_id: str) -> Job:
        return self.cached(("job", job_id), lambda: self.jobs_store.get(job_id))

    def jobs(self, status: JobStatus | None) -> list[Job]:
        return self.cached(("jobs", status), lambda: self.jobs_store.list(status))

    def ledger_rows(self, job_id: str) -> tuple[list[Workload], list[Migration]]:
        return self.cached(("ledger", job_id),
                           lambda: (self.ledger.workloads(job_id), self.ledger.migrations(job_id)))


def snapshot_reads(settings: Settings) -> tuple[StoreReads, "TokenStore"] | None:
    """StoreReads and a TokenStore over in-memory copies of the embedded store (writes go to the
    store), or None when the job store or the ledger is a real database (they index their queries)."""
    if settings.mongodb_url is not None or (settings.supabase_url and settings.supabase_key is not None):
        return None
    from spotshift.stores import EmbeddedLedger, JobStore, open_embedded_database
    from spotshift.stores.snapshot import SnapshotDatabase, StoreVersion
    from spotshift.stores.tokens import TokenStore

    embedded = open_embedded_database(settings.store_dir, settings.mongodb_database)
    version = StoreVersion(settings.store_dir / settings.mongodb_database)
    database, lock = SnapshotDatabase(embedded.database, version), embedded.write_lock
    reads = StoreReads(JobStore(database, write_lock=lock), EmbeddedLedger(database, write_lock=lock), version)
    return reads, TokenStore(database, write_lock=lock)
