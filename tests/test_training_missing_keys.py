"""training.missing_keys: S3's rule for a missing key (404 to a caller allowed s3:ListBucket, 403 to
any other) told apart from a denied read; and the trainer starting a fresh job and resuming it on an
S3 that answers a missing key with 403, as AWS answers the trainer's role (moto behind a proxy)."""

from __future__ import annotations

import logging

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from tests.s3_missing_key_403 import s3_answering_missing_keys_with_403
from training.contract import CONTROL, LATEST, PROGRESS, ControlRequest, read_latest, read_progress, write_control
from training.exitcodes import EXIT_CHECKPOINTED, EXIT_DONE
from training.loop import TrainerIO, run_training
from training.missing_keys import PermissionDenied, is_missing_key
from training.spec import TrainingSpec
from training.stopping import StopFlag
from training.storage import S3Store, read_uri_bytes, s3_client_config

KEY = "jobs/j/control.json"


def denied(operation: str = "GetObject") -> ClientError:
    return ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"},
                        "ResponseMetadata": {"HTTPStatusCode": 403}}, operation)


def stubbed_s3() -> tuple[object, Stubber]:
    """An S3 client whose answers the test gives (botocore's Stubber): no server needed."""
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(s3)
    stubber.activate()
    return s3, stubber


def listing(stubber: Stubber, *keys: str) -> None:
    stubber.add_response("list_objects_v2", {"Contents": [{"Key": k} for k in keys], "KeyCount": len(keys)},
                         {"Bucket": "b", "Prefix": KEY, "MaxKeys": 1})


def test_403_and_a_listing_without_the_key_is_absent():
    s3, stubber = stubbed_s3()
    listing(stubber)
    assert is_missing_key(s3, "b", KEY, denied())
    stubber.assert_no_pending_responses()


def test_403_and_a_listing_of_a_longer_key_only_is_absent():
    s3, stubber = stubbed_s3()
    listing(stubber, KEY + ".bak")
    assert is_missing_key(s3, "b", KEY, denied())


def test_403_and_a_listing_that_shows_the_key_is_permission_denied_naming_key_and_action():
    s3, stubber = stubbed_s3()
    listing(stubber, KEY)
    stubber.add_client_error("head_object", service_error_code="403", http_status_code=403,
                             expected_params={"Bucket": "b", "Key": KEY})
    with pytest.raises(PermissionDenied, match=r"s3:GetObject on s3://b/jobs/j/control\.json.*exists") as raised:
        is_missing_key(s3, "b", KEY, denied())
    assert raised.value.uri == f"s3://b/{KEY}" and raised.value.action == "s3:GetObject"


def test_a_key_written_between_the_403_and_the_listing_was_absent_when_read():
    # the race seen in CI (a stub: no real S3 can be made to write between two requests on cue):
    # the GET found no key (403), the orchestrator wrote control.json, the listing shows it
    s3, stubber = stubbed_s3()
    listing(stubber, KEY)
    stubber.add_response("head_object", {"ContentLength": 2}, {"Bucket": "b", "Key": KEY})
    assert is_missing_key(s3, "b", KEY, denied())
    stubber.assert_no_pending_responses()


def test_403_and_a_refused_listing_is_permission_denied():
    s3, stubber = stubbed_s3()
    stubber.add_client_error("list_objects_v2", service_error_code="AccessDenied", http_status_code=403)
    with pytest.raises(PermissionDenied, match="ListBucket .* was denied too"):
        is_missing_key(s3, "b", KEY, denied())


@pytest.mark.parametrize("code", ["NoSuchKey", "404"])
def test_404_is_absent_without_a_listing(code):
    s3, stubber = stubbed_s3()  # no response queued: a listing would fail the test
    error = ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": 404}}, "GetObject")
    assert is_missing_key(s3, "b", KEY, error)


def test_other_errors_are_not_an_absence_and_list_nothing():
    s3, stubber = stubbed_s3()
    slow = ClientError({"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "GetObject")
    assert not is_missing_key(s3, "b", KEY, slow)


def test_store_read_of_an_object_it_may_not_read_raises_permission_denied():
    s3, stubber = stubbed_s3()
    stubber.add_client_error("get_object", service_error_code="AccessDenied", http_status_code=403,
                             expected_params={"Bucket": "b", "Key": KEY})
    listing(stubber, KEY)
    stubber.add_client_error("head_object", service_error_code="403", http_status_code=403)
    with pytest.raises(PermissionDenied, match="control.json"):
        S3Store(s3, "b", "jobs/j/").get_bytes("control.json")


# -- an S3 that answers like AWS: moto behind the 403 proxy ---------------------------------------


@pytest.fixture
def s3_without_list_bucket(moto_endpoint):
    """(proxy, client): the trainer's S3 client settings, through the S3 that answers a missing key
    with 403 (tests/s3_missing_key_403.py)."""
    with s3_answering_missing_keys_with_403(moto_endpoint) as proxy:
        yield proxy, boto3.client("s3", endpoint_url=proxy.endpoint, region_name="us-east-1",
                                  aws_access_key_id="testing", aws_secret_access_key="testing",
                                  config=s3_client_config())


def test_store_reads_of_missing_keys_answered_403_are_absences(s3_without_list_bucket, bucket, tmp_path):
    proxy, s3 = s3_without_list_bucket
    store = S3Store(s3, bucket, "jobs/j/")
    store.put_bytes("present.json", b"{}")
    assert store.get_bytes("nope.json") is None and store.get_bytes("present.json") == b"{}"
    with pytest.raises(FileNotFoundError, match=f"s3://{bucket}/jobs/j/nope.bin"):
        store.get_buffer("nope.bin")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        store.download_file("nope.txt", tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="spec.json"):
        read_uri_bytes(f"s3://{bucket}/jobs/j/spec.json", s3)
    assert {f"{bucket}/jobs/j/{k}" for k in ("nope.json", "nope.bin", "nope.txt", "spec.json")} <= proxy.denied_keys()


@pytest.mark.usefixtures("one_torch_thread")
def test_trainer_starts_a_fresh_job_and_resumes_it_on_an_s3_that_answers_missing_keys_with_403(
    s3_without_list_bucket, tiny_lm, bucket, caplog
):
    proxy, s3 = s3_without_list_bucket
    model_dir, dataset = tiny_lm
    spec = TrainingSpec(job_id="fresh", model=str(model_dir), dataset=str(dataset), output=f"s3://{bucket}/jobs/fresh/",
                        max_steps=8, batch_size=2, seq_len=32, checkpoint_every_steps=None, keep_checkpoints=2,
                        heartbeat_seconds=0.2, control_poll_seconds=0.05, min_step_seconds=0.05,
                        metrics_every_steps=2)

    def move_at_step_3(step, loss):
        if step == 3:
            write_control(s3, spec.output, ControlRequest(request_id="move-1", reason="cheaper zone"))

    caplog.set_level(logging.WARNING)
    store = S3Store.from_uri(s3, spec.output)
    first = run_training(spec, TrainerIO(store=store, s3=s3, on_step=move_at_step_3), StopFlag())
    assert first.exit_code == EXIT_CHECKPOINTED, first.error
    stopped = read_progress(s3, spec.output)
    assert stopped.state == "checkpointed" and stopped.stop_reason == "control" and stopped.step >= 3
    assert read_latest(s3, spec.output).step == stopped.step
    # the fresh job's first reads were of keys that did not exist yet, and S3 answered them 403
    job = f"{bucket}/jobs/fresh/"
    assert {job + PROGRESS, job + LATEST, job + CONTROL} <= proxy.denied_keys()

    second = run_training(spec, TrainerIO(store=store, s3=s3), StopFlag())
    assert second.exit_code == EXIT_DONE, second.error
    assert second.start_step == stopped.step and second.final_step == spec.max_steps
    done = read_progress(s3, spec.output)
    assert done.state == "done" and done.resumed_from_step == stopped.step and done.honoured_request_id == "move-1"
    assert {"config.json", "model.safetensors"} <= {k.split("/", 1)[1] for k in store.list_keys("final/")}
    assert not [r.getMessage() for r in caplog.records if "poll failed" in r.getMessage()]
