"""The configured stores: the job store on MongoDB (or the embedded store) and the ledger on
Supabase (or the embedded store), their clients built from the credentials blocks."""

from __future__ import annotations

from spotshift.settings import Settings
from spotshift.stores import EmbeddedLedger, JobStore, Ledger, SupabaseLedger, open_embedded_database
from spotshift.stores.market_history import MarketHistoryStore
from spotshift.stores.throughput import ThroughputStore


def _in_job_database(store_class, settings: Settings | None):
    """A store over the job store's database: the configured MongoDB (settings.mongodb_url), else
    the embedded document store (with its cross-process write lock)."""
    settings = settings or Settings()
    if settings.mongodb_url is not None:
        from blocks.mongodb import MongoDBCredentials

        creds = MongoDBCredentials(connection_string=settings.mongodb_url, database=settings.mongodb_database)
        return store_class(creds.get_database())
    embedded = open_embedded_database(settings.store_dir, settings.mongodb_database)
    return store_class(embedded.database, write_lock=embedded.write_lock)


def open_job_store(settings: Settings | None = None) -> JobStore:
    """Jobs, on MongoDB when configured, else on the embedded store."""
    return _in_job_database(JobStore, settings)


def open_ledger(settings: Settings | None = None) -> Ledger:
    """SupabaseLedger when settings.supabase_url and supabase_key are set, else the embedded ledger."""
    settings = settings or Settings()
    if settings.supabase_url and settings.supabase_key is not None:
        from blocks.supabase import SupabaseCredentials

        return SupabaseLedger(SupabaseCredentials(url=settings.supabase_url, key=settings.supabase_key).get_client())
    embedded = open_embedded_database(settings.store_dir, settings.mongodb_database)
    return EmbeddedLedger(embedded.database, write_lock=embedded.write_lock)


def open_token_store(settings: Settings | None = None):
    """The HTTP API's tokens (hashed), in the job store's database."""
    from spotshift.stores.tokens import TokenStore

    return _in_job_database(TokenStore, settings)


def open_market_history(settings: Settings | None = None) -> MarketHistoryStore:
    """The recorded zone observations, in the job store's database."""
    return _in_job_database(MarketHistoryStore, settings)


def open_throughput_store(settings: Settings | None = None) -> ThroughputStore:
    """Measured training rates (steps/s per instance type, model, method, precision), in the job
    store's database."""
    return _in_job_database(ThroughputStore, settings)


def open_fleet_marks(settings: Settings | None = None):
    """What the fleet pass remembers between passes (heartbeat ETags, signs of life), in the job
    store's database."""
    from spotshift.stores.fleet_marks import FleetMarkStore

    return _in_job_database(FleetMarkStore, settings)
