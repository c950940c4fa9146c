"""The embedded document store: montydb (pymongo-style API) on SQLite, plus a cross-process write lock.

Why montydb: it is maintained, speaks the pymongo calls JobStore uses (insert_one, find_one_and_update
with $in/$set/$push, replace_one upsert) and persists to one SQLite file. Its updates are
read-modify-write in Python and its only unique index is `_id`, so two processes (a flow run and the
continuous scout) could interleave; every write therefore runs under one `filelock.FileLock` beside
the data, which makes each write atomic across processes. Reads need no lock (SQLite WAL).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import montydb.errors
import pymongo.errors
from filelock import FileLock

# A duplicate `_id` or unique-index violation, from either backend.
DUPLICATE_KEY_ERRORS: tuple[type[Exception], ...] = (
    pymongo.errors.DuplicateKeyError,
    montydb.errors.DuplicateKeyError,
)

LOCK_TIMEOUT_S = 60.0
COLLECTIONS = ("jobs", "plans", "workloads", "migrations")  # the job store's and the ledger's


@dataclass(frozen=True)
class EmbeddedDatabase:
    """A montydb database and the lock every writer of it must hold."""

    database: object
    write_lock: AbstractContextManager


def open_embedded_database(directory: Path, name: str = "spotshift") -> EmbeddedDatabase:
    """Open (creating if needed) the SQLite-backed montydb database `name` under `directory`."""
    from montydb import MontyClient, set_storage

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(directory / "write.lock"), timeout=LOCK_TIMEOUT_S)
    with lock:
        if not (directory / "monty.storage.cfg").exists():
            set_storage(str(directory), storage="sqlite")
        database = MontyClient(str(directory))[name]
        # montydb creates a collection's SQLite file before its table: a reader in another process
        # must never see that gap, so every collection exists (file and table) before anyone reads
        for collection in COLLECTIONS:
            if collection not in database.list_collection_names():
                database.create_collection(collection)
    return EmbeddedDatabase(database=database, write_lock=lock)
