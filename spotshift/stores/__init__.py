"""Where spotshift keeps state: the job store (MongoDB or embedded) and the ledger (Supabase or embedded)."""

from __future__ import annotations

from spotshift.stores.embedded import EmbeddedDatabase, open_embedded_database
from spotshift.stores.errors import InvalidTransition, JobIdConflict, JobNotFound
from spotshift.stores.jobs import Jobs, JobStore
from spotshift.stores.ledger import EmbeddedLedger, Ledger, SupabaseLedger


__all__ = [
    "EmbeddedDatabase", "EmbeddedLedger", "InvalidTransition", "JobIdConflict", "JobNotFound", "Jobs", "JobStore",
    "Ledger", "SupabaseLedger", "open_embedded_database",
]
