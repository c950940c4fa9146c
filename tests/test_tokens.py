"""API tokens: stored as their SHA-256 only, checked, revoked; the `spotshift api token` commands."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from blocks.stores import open_token_store
from deployments.cli import main
from spotshift.settings import Settings
from spotshift.stores.tokens import TokenNameTaken, TokenNotFound

NOW = datetime(2026, 11, 28, 9, tzinfo=UTC)


@pytest.fixture
def tokens(tmp_path):
    return open_token_store(Settings(home=tmp_path))


def test_only_the_hash_is_stored_and_the_token_checks_until_revoked(tokens, tmp_path):
    token = tokens.create("ci", now=NOW)
    record = tokens.verify(token)
    assert record is not None and record.name == "ci" and record.sha256 == hashlib.sha256(token.encode()).hexdigest()
    stored = b"".join(p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file())
    assert token.encode() not in stored and record.sha256.encode() in stored
    assert tokens.verify(token + "x") is None and tokens.verify("") is None

    assert tokens.revoke("ci", now=NOW) == 1
    assert tokens.verify(token) is None
    with pytest.raises(TokenNotFound, match="no active API token named 'ci'"):
        tokens.revoke("ci", now=NOW)


def test_a_name_has_one_active_token_and_is_free_again_once_revoked(tokens):
    first = tokens.create("ci", now=NOW)
    with pytest.raises(TokenNameTaken, match="revoke it first"):
        tokens.create("ci", now=NOW)
    tokens.revoke("ci", now=NOW)
    second = tokens.create("ci", now=NOW + timedelta(seconds=1))  # listed oldest first
    assert second != first and tokens.verify(second) is not None and tokens.verify(first) is None
    assert [(t.name, t.active) for t in tokens.list()] == [("ci", False), ("ci", True)]


def test_a_bad_name_is_refused_naming_the_field(tokens):
    with pytest.raises(ValidationError, match="name"):
        tokens.create("no spaces; please", now=NOW)
    assert tokens.list() == []


def test_the_cli_prints_the_new_token_as_its_last_word_and_revokes_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPOTSHIFT_HOME", str(tmp_path))
    assert main(["api", "token", "create", "--name", "laptop"]) == 0
    token = capsys.readouterr().out.split()[-1]
    store = open_token_store(Settings(home=tmp_path))
    assert store.verify(token).name == "laptop"
    assert main(["api", "token", "revoke", "laptop"]) == 0
    assert store.verify(token) is None
    assert main(["api", "token", "revoke", "laptop"]) == 2
    assert "no active API token named 'laptop'" in capsys.readouterr().err
