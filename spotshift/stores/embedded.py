"""The embedded document store: montydb (pymongo-style API) on SQLite, plus a cross-process write lock.

Why montydb: it is maintained, speaks the pymongo calls JobStore uses (insert_one, find_one_and_update
with $in/$set/$push, replace_one upsert) and persists to one SQLite file. Its updates are
read-modify-write in Python and its only unique index is `_id`, so two processes (a flow run and the
continuous scout) could interleave; every write therefore runs under one `filelock.FileLock` beside
the data, which makes each write atomic across processes. Reads need no lock (SQLite WAL).
"""

from __future__ import annotations

import threading
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
COLLECTIONS = ("jobs", "plans", "workloads", "migrations", "api_tokens", "zone_observations", "throughput")


class PerThreadDatabase:
    """A montydb database whose every use goes to the calling thread's own client. montydb's SQLite
    storage keeps its current connection in one attribute shared by all threads, so two threads
    using one client can get each other's connection (which sqlite3 refuses); a flow's tasks and
    its callers do use a store from several threads."""

    def __init__(self, directory: Path, name: str):
        self._directory, self._name = str(directory), name
        self._local = threading.local()

    def current(self):
        """The calling thread's montydb Database."""
        database = getattr(self._local, "database", None)
        if database is None:
            from montydb import MontyClient

            database = self._local.database = MontyClient(self._directory)[self._name]
        return database

    def __getitem__(self, collection: str) -> "PerThreadCollection":
        return PerThreadCollection(self, collection)

    def __getattr__(self, attribute: str):
        return getattr(self.current(), attribute)


class PerThreadCollection:
    """A collection of a PerThreadDatabase: each call runs on the calling thread's client."""

    def __init__(self, database: PerThreadDatabase, name: str):
        self._database, self._name = database, name

    def __getattr__(self, attribute: str):
        return getattr(self._database.current()[self._name], attribute)

    def write_back(self, docs: list[dict]) -> None:
        """Store whole documents read from this collection over their rows (by `_id`), in one SQLite
        transaction: montydb's replace_one/update_one scan the collection once per document, its
        storage writes a row by key (UPDATE ... WHERE k = ?). Hold the write lock from the read on."""
        collection = self._database.current()[self._name]
        collection._storage.update_many(collection, docs)


@dataclass(frozen=True)
class EmbeddedDatabase:
    """A montydb database and the lock every writer of it must hold."""

    database: object
    write_lock: AbstractContextManager


def open_embedded_database(directory: Path, name: str = "spotshift") -> EmbeddedDatabase:
    """Open (creating if needed) the SQLite-backed montydb database `name` under `directory`."""
    from montydb import set_storage

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(directory / "write.lock"), timeout=LOCK_TIMEOUT_S)
    with lock:
        if not (directory / "monty.storage.cfg").exists():
            set_storage(str(directory), storage="sqlite")
        database = PerThreadDatabase(directory, name)
        # montydb creates a collection's SQLite file before its table: a reader in another process
        # must never see that gap, so every collection exists (file and table) before anyone reads
        for collection in COLLECTIONS:
            if collection not in database.list_collection_names():
                database.create_collection(collection)
    return EmbeddedDatabase(database=database, write_lock=lock)
