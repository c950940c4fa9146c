"""API tokens: bearer tokens for the HTTP API, stored as their SHA-256 hash only (never the token),
in the same document store as the jobs (MongoDB or the embedded store)."""

from __future__ import annotations

import hashlib
import secrets
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

TOKEN_PREFIX = "sst_"  # recognisable in a leaked log or a secret scanner
TOKEN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


class ApiToken(BaseModel):
    """A stored token: its name and hash, never the token itself."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=TOKEN_NAME_PATTERN, description="letters, digits, '.', '_' and '-', 1-63")
    sha256: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class TokenNameTaken(ValueError):
    def __init__(self, name: str):
        super().__init__(f"an active API token named {name!r} exists: revoke it first or choose another name")
        self.name = name


class TokenNotFound(LookupError):
    def __init__(self, name: str):
        super().__init__(f"no active API token named {name!r}")
        self.name = name


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """Tokens in the `api_tokens` collection, `_id` = the token's SHA-256 (a lookup is one get)."""

    def __init__(self, database, *, write_lock: AbstractContextManager | None = None):
        self._tokens = database["api_tokens"]
        self._lock = write_lock if write_lock is not None else nullcontext()

    def create(self, name: str, *, now: datetime) -> str:
        """A new token named `name`; returns the token, which is shown once and stored only hashed."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = ApiToken(name=name, sha256=token_hash(token), created_at=now)
        with self._lock:
            if self._tokens.find_one({"name": name, "revoked_at": None}) is not None:
                raise TokenNameTaken(name)
            self._tokens.insert_one({"_id": record.sha256, **_dump(record)})
        return token

    def verify(self, token: str) -> ApiToken | None:
        """The active token `token` is, or None (unknown or revoked)."""
        doc = self._tokens.find_one({"_id": token_hash(token)})
        if doc is None:
            return None
        record = ApiToken.model_validate({k: v for k, v in doc.items() if k != "_id"})
        return record if record.active else None

    def revoke(self, name: str, *, now: datetime) -> int:
        """Revoke every active token named `name`; how many. TokenNotFound if there is none."""
        with self._lock:
            result = self._tokens.update_many({"name": name, "revoked_at": None},
                                              {"$set": {"revoked_at": _iso(now)}})
        if result.modified_count == 0:
            raise TokenNotFound(name)
        return result.modified_count

    def list(self) -> list[ApiToken]:
        docs = self._tokens.find({}).sort([("created_at", 1), ("_id", 1)])
        return [ApiToken.model_validate({k: v for k, v in d.items() if k != "_id"}) for d in docs]


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _dump(record: ApiToken) -> dict:
    return {"name": record.name, "sha256": record.sha256, "created_at": _iso(record.created_at),
            "revoked_at": None if record.revoked_at is None else _iso(record.revoked_at)}
