"""Where spotshift keeps state: the job store (MongoDB or embedded) and the ledger (Supabase or embedded)."""

from __future__ import annotations

from spotshift.settings import Settings
from spotshift.stores.embedded import EmbeddedDatabase, open_embedded_database
from spotshift.stores.errors import InvalidTransition, JobIdConflict, JobNotFound
from spotshift.stores.jobs import JobStore
from spotshift.stores.ledger import EmbeddedLedger, Ledger, SupabaseLedger


def open_job_store(settings: Settings | None = None) -> JobStore:
    """A JobStore on the configured MongoDB (settings.mongodb_url), else on the embedded store."""
    settings = settings or Settings()
    if settings.mongodb_url is not None:
        from blocks.mongodb import MongoDBCredentials

        creds = MongoDBCredentials(connection_string=settings.mongodb_url, database=settings.mongodb_database)
        return JobStore(creds.get_database())
    embedded = open_embedded_database(settings.store_dir, settings.mongodb_database)
    return JobStore(embedded.database, write_lock=embedded.write_lock)


def open_ledger(settings: Settings | None = None) -> Ledger:
    """SupabaseLedger when settings.supabase_url and supabase_key are set, else the embedded ledger."""
    settings = settings or Settings()
    if settings.supabase_url and settings.supabase_key is not None:
        from blocks.supabase import SupabaseCredentials

        return SupabaseLedger(SupabaseCredentials(url=settings.supabase_url, key=settings.supabase_key).get_client())
    embedded = open_embedded_database(settings.store_dir, settings.mongodb_database)
    return EmbeddedLedger(embedded.database, write_lock=embedded.write_lock)


__all__ = [
    "EmbeddedDatabase", "EmbeddedLedger", "InvalidTransition", "JobIdConflict", "JobNotFound", "JobStore",
    "Ledger", "SupabaseLedger", "open_embedded_database", "open_job_store", "open_ledger",
]
