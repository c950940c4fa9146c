"""A job's model or dataset in S3 that is absent or refused to the instance's role is a permanent
failure: the trainer exits 78 naming the field, the URI and the fix (a relaunch would read the same
input with the same role); throttling and server errors stay retryable."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from training.contract import read_progress
from training.exitcodes import EXIT_PERMANENT
from training.loop import TrainerIO, run_training
from training.model_source import InputUnreadable, read_dataset_bytes, resolve_model_dir
from training.spec import TrainingSpec
from training.stopping import StopFlag
from training.storage import S3Store


def spec_for(bucket: str, model: str, dataset: str) -> TrainingSpec:
    return TrainingSpec(job_id="unreadable", model=model, dataset=dataset, output=f"s3://{bucket}/jobs/unreadable/",
                        max_steps=4, batch_size=2, seq_len=32, heartbeat_seconds=0.2, control_poll_seconds=0.05)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("field", ["model", "dataset"])
def test_an_absent_s3_input_ends_the_trainer_with_78_naming_the_field_and_the_uri(s3, bucket, tiny_lm, field,
                                                                                   aws_data_grant):
    """The user granted the prefixes (setup --data), but nothing lies at the URI."""
    aws_data_grant(f"s3://{bucket}/models/", f"s3://{bucket}/data/")
    model_dir, dataset = tiny_lm
    absent = f"s3://{bucket}/models/none/" if field == "model" else f"s3://{bucket}/data/none.txt"
    spec = spec_for(bucket, absent if field == "model" else str(model_dir), absent if field == "dataset" else str(dataset))
    result = run_training(spec, TrainerIO(store=S3Store.from_uri(s3, spec.output), s3=s3), StopFlag())
    assert result.exit_code == EXIT_PERMANENT, result.error
    progress = read_progress(s3, spec.output)
    assert progress.state == "failed" and progress.permanent
    assert f"job's {field} {absent} cannot be read" in progress.error and "InputUnreadable" in progress.error


def stubbed_s3() -> tuple[object, Stubber]:
    """An S3 client whose answers the test gives (botocore's Stubber): moto without IAM enforcement
    refuses nothing, and a refusal is what this checks."""
    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    stubber.activate()
    return client, stubber


def test_a_refused_model_listing_is_unreadable_and_names_s3s_answer_and_the_setup_data_command(tmp_path):
    s3, stubber = stubbed_s3()
    stubber.add_client_error("list_objects_v2", service_error_code="AccessDenied", service_message="Access Denied",
                             http_status_code=403)
    with pytest.raises(InputUnreadable) as raised:
        resolve_model_dir("s3://user-bucket/models/base/", tmp_path, s3)
    assert raised.value.field == "model" and raised.value.uri == "s3://user-bucket/models/base/"
    assert "AccessDenied to ListObjectsV2 (Access Denied)" in str(raised.value)
    assert "spotshift aws setup --data" in str(raised.value)


def test_a_refused_dataset_read_is_unreadable(aws_data_grant):
    """Refused although the prefix was granted (a bucket policy, an SSE-KMS key the role may not use):
    the call check holds the calls to the policy with the grant."""
    aws_data_grant("s3://user-bucket/data/")
    s3, stubber = stubbed_s3()
    stubber.add_client_error("get_object", service_error_code="AccessDenied", http_status_code=403)
    stubber.add_response("list_objects_v2", {"Contents": [{"Key": "data/c.txt"}], "KeyCount": 1})
    stubber.add_client_error("head_object", service_error_code="403", http_status_code=403)
    with pytest.raises(InputUnreadable, match=r"job's dataset s3://user-bucket/data/c.txt cannot be read: s3:GetObject"):
        read_dataset_bytes("s3://user-bucket/data/c.txt", s3)


@pytest.mark.parametrize("code,status", [("SlowDown", 503), ("InternalError", 500)])
def test_throttling_and_server_errors_stay_retryable(tmp_path, code, status):
    s3, stubber = stubbed_s3()
    stubber.add_client_error("list_objects_v2", service_error_code=code, http_status_code=status)
    with pytest.raises(ClientError) as raised:
        resolve_model_dir("s3://user-bucket/models/base/", tmp_path, s3)
    assert not isinstance(raised.value, InputUnreadable)
