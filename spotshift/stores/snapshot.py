"""Reads of the embedded store from an in-memory copy of each collection, reloaded after every
commit to the store: montydb scans and decodes a whole collection on every query (33 ms per job lookup at
1,000 jobs), which a busy HTTP API cannot afford. Writes go to the store itself."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator


class StoreVersion:
    """A value that changes whenever a commit reaches the embedded store under `directory`: SQLite's
    data_version of each collection file (it moves on every commit by any other connection, in
    this process or another), read through one read-only connection per file."""

    def __init__(self, directory: Path):
        self._connections = {path.stem: sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
                             for path in sorted(Path(directory).glob("*.collection"))}
        self._lock = threading.Lock()

    def __call__(self) -> Hashable:
        """The whole store's version."""
        with self._lock:
            return tuple(c.execute("PRAGMA data_version").fetchone()[0] for c in self._connections.values())

    def of(self, collection: str) -> Hashable:
        """One collection's version (a write to another one leaves it as it is)."""
        with self._lock:
            return self._connections[collection].execute("PRAGMA data_version").fetchone()[0]

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()


@dataclass(frozen=True)
class _Copy:
    version: Hashable
    docs: list[dict[str, Any]]
    by_id: dict[Any, dict[str, Any]] = field(default_factory=dict)


class SnapshotDatabase:
    """The pymongo-style database JobStore, EmbeddedLedger and TokenStore take, reading from
    in-memory copies (documents are shared: callers must not mutate them)."""

    def __init__(self, database, version: StoreVersion):
        self._database, self._version = database, version
        self._collections: dict[str, SnapshotCollection] = {}

    def __getitem__(self, name: str) -> SnapshotCollection:
        if name not in self._collections:
            self._collections[name] = SnapshotCollection(self._database[name], lambda: self._version.of(name))
        return self._collections[name]

    def __getattr__(self, attribute: str):
        return getattr(self._database, attribute)


class SnapshotCollection:
    """find/find_one over a copy of the collection (equality, None = missing, $in); every other
    call goes to the real collection."""

    def __init__(self, collection, version: Callable[[], Hashable]):
        self._collection, self._version = collection, version
        self._copy: _Copy | None = None
        self._reload = threading.Lock()

    def find_one(self, query: dict[str, Any]) -> dict[str, Any] | None:
        copy = self._current()
        if set(query) == {"_id"} and not isinstance(query["_id"], dict):
            return copy.by_id.get(query["_id"])
        return next((d for d in copy.docs if matches(d, query)), None)

    def find(self, query: dict[str, Any] | None = None) -> _Cursor:
        return _Cursor([d for d in self._current().docs if matches(d, query or {})])

    def __getattr__(self, attribute: str):
        return getattr(self._collection, attribute)

    def _current(self) -> _Copy:
        version = self._version()
        copy = self._copy
        if copy is not None and copy.version == version:
            return copy
        with self._reload:  # one reload at a time; the others wait for it and use it
            if self._copy is None or self._copy.version != version:
                docs = list(self._collection.find({}))
                self._copy = _Copy(version, docs, {d["_id"]: d for d in docs})
            return self._copy


class _Cursor:
    def __init__(self, docs: list[dict[str, Any]]):
        self._docs = docs

    def sort(self, keys: list[tuple[str, int]]) -> _Cursor:
        for key, direction in reversed(keys):  # stable sorts, last key first
            self._docs.sort(key=lambda d: _sort_key(d.get(key)), reverse=direction < 0)
        return self

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._docs)


def _sort_key(value: Any) -> tuple:
    return (value is not None, value if value is not None else 0)


def matches(doc: dict[str, Any], query: dict[str, Any]) -> bool:
    """Whether `doc` satisfies a query of equalities and {"$in": [...]} (MongoDB's meaning of None:
    the field is missing or null)."""
    for key, wanted in query.items():
        value = doc.get(key)
        if isinstance(wanted, dict):
            unknown = set(wanted) - {"$in"}
            if unknown:
                raise ValueError(f"snapshot queries support equality and $in, not {sorted(unknown)}")
            if value not in wanted["$in"]:
                return False
        elif value != wanted:
            return False
    return True
