"""No secret value appears in repr, str, logs or JSON dumps of any block or settings model."""

from __future__ import annotations

import logging

import pytest
from prefect_aws import AwsCredentials

from blocks import MongoDBCredentials, SupabaseCredentials, aws_credentials_from_settings
from spotshift.settings import Settings

SECRET = "s3cr3t-DO-NOT-LEAK-42"


def _holders():
    return [
        SupabaseCredentials(url="https://example.supabase.co", key=SECRET),
        MongoDBCredentials(connection_string=f"mongodb://spot:{SECRET}@db.example:27017/", database="spotshift"),
        AwsCredentials(aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key=SECRET),
        Settings(mongodb_url=f"mongodb://spot:{SECRET}@db.example/", supabase_url="https://x.supabase.co",
                 supabase_key=SECRET),
    ]


@pytest.mark.parametrize("holder", _holders(), ids=lambda h: type(h).__name__)
def test_secret_absent_from_repr_str_and_json(holder):
    for rendering in (repr(holder), str(holder), holder.model_dump_json(), str(holder.model_dump())):
        assert SECRET not in rendering


@pytest.mark.parametrize("holder", _holders(), ids=lambda h: type(h).__name__)
def test_secret_absent_from_logs(holder, caplog):
    log = logging.getLogger("spotshift.test")
    with caplog.at_level(logging.DEBUG, logger="spotshift.test"):
        log.info("configured %s", holder)
        log.info("configured %r", holder)
        log.info("dump %s", holder.model_dump(mode="json"))
    assert caplog.records
    assert SECRET not in caplog.text


def test_secret_still_reachable_on_purpose():
    """The hiding is not a loss: the client builders still get the real value."""
    assert SupabaseCredentials(url="https://x.supabase.co", key=SECRET).key.get_secret_value() == SECRET


def test_blocks_built_by_spotshift_hold_no_session_token():
    """prefect-aws keeps `aws_session_token` as a plain str (it would show in repr): spotshift never
    sets one; temporary credentials come from boto3's chain (env, profile, instance role)."""
    creds = aws_credentials_from_settings(Settings(aws_endpoint_url="http://127.0.0.1:5999"))
    assert creds.aws_session_token is None
    assert creds.aws_secret_access_key is None
