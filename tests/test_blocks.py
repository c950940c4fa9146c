"""Credential blocks: clients they build, blocks settings describe, and saving them to Prefect."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from blocks import MongoDBCredentials, SupabaseCredentials, aws_credentials_from_settings, load_aws_credentials
from blocks.register import blocks_from_settings
from spotshift.settings import Settings


def test_aws_credentials_from_settings_reach_the_moto_server(moto_endpoint, aws_env, bucket):
    creds = aws_credentials_from_settings(Settings(aws_endpoint_url=moto_endpoint, aws_region="us-east-1"))
    s3 = creds.get_s3_client()
    s3.put_object(Bucket=bucket, Key="probe.txt", Body=b"hello")
    assert s3.get_object(Bucket=bucket, Key="probe.txt")["Body"].read() == b"hello"
    assert creds.get_client("ec2").meta.endpoint_url == moto_endpoint


def test_load_aws_credentials_without_a_block_name_builds_from_settings():
    creds = load_aws_credentials(Settings(aws_endpoint_url="http://127.0.0.1:5999", aws_region="eu-west-1"),
                                 block_name=None)
    assert creds.region_name == "eu-west-1"
    assert creds.aws_client_parameters.endpoint_url == "http://127.0.0.1:5999"


def test_mongodb_credentials_build_a_tz_aware_client_for_the_database():
    block = MongoDBCredentials(connection_string="mongodb://127.0.0.1:1/", database="jobsdb")
    db = block.get_database(serverSelectionTimeoutMS=50, connect=False)
    assert db.name == "jobsdb"
    assert db.client.codec_options.tz_aware is True


def test_supabase_credentials_build_a_client_for_the_project_url():
    block = SupabaseCredentials(url="http://127.0.0.1:54321", key="sb_secret_" + "k" * 30)
    client = block.get_client()
    assert str(client.supabase_url).rstrip("/") == "http://127.0.0.1:54321"


def test_blocks_from_settings_include_only_configured_systems():
    assert set(blocks_from_settings(Settings())) == {"aws"}
    full = Settings(mongodb_url="mongodb://127.0.0.1/", supabase_url="http://127.0.0.1:54321", supabase_key="k" * 20)
    found = blocks_from_settings(full)
    assert set(found) == {"aws", "mongodb", "supabase"}
    assert found["supabase"].key.get_secret_value() == "k" * 20


@pytest.mark.slow
def test_register_saves_blocks_that_load_back(tmp_path):
    """One temporary Prefect server (about 20 s): register from settings, load each block back."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SPOTSHIFT_", "PREFECT_API_"))},
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",  # 2 shared cores: startup can be slow
        "SPOTSHIFT_MONGODB_URL": "mongodb://spot:hunter2-mongo@127.0.0.1:1/",
        "SPOTSHIFT_SUPABASE_URL": "http://127.0.0.1:54321",
        "SPOTSHIFT_SUPABASE_KEY": "hunter2-supabase-key",
        "SPOTSHIFT_AWS_ENDPOINT_URL": "http://127.0.0.1:5999",
    }
    script = (
        "import json\n"
        "from blocks.register import register_blocks\n"
        "from blocks import MongoDBCredentials, SupabaseCredentials, load_aws_credentials\n"
        "from spotshift.settings import Settings\n"
        "saved = register_blocks(Settings())\n"
        "print(json.dumps({'saved': saved,\n"
        "  'supabase_key': SupabaseCredentials.load('spotshift').key.get_secret_value() == 'hunter2-supabase-key',\n"
        "  'mongo_db': MongoDBCredentials.load('spotshift').database,\n"
        "  'aws_endpoint': load_aws_credentials(Settings(aws_endpoint_url=None)).aws_client_parameters.endpoint_url}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["saved"] == {
        "aws": "aws-credentials/spotshift",
        "mongodb": "mongodb-credentials/spotshift",
        "supabase": "supabase-credentials/spotshift",
    }
    assert result["supabase_key"] is True
    assert result["mongo_db"] == "spotshift"
    assert result["aws_endpoint"] == "http://127.0.0.1:5999"  # the saved block wins over settings
    assert "hunter2" not in out.stdout + out.stderr
