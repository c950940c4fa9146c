"""training.contract and training.data: the S3 layout, the JSON documents, the seeded data order."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import torch
from pydantic import ValidationError

from training.contract import (
    CheckpointManifest, ControlRequest, Progress, checkpoint_prefix, read_control, read_latest, read_progress,
    step_of_key, write_control, write_progress, write_spec,
)
from training.data import BlockSampler, pack_blocks, parse_corpus
from training.spec import TrainingSpec
from training.storage import read_uri_bytes

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_layout():
    assert checkpoint_prefix(40) == "checkpoints/step-40/"
    assert step_of_key("checkpoints/step-40/optimizer.pt") == 40
    assert step_of_key("checkpoints/LATEST.json") is None


def test_orchestrator_helpers_round_trip_through_s3(s3, bucket):
    spec = TrainingSpec(job_id="j1", model="gpt2", dataset=f"s3://{bucket}/d.txt", output=f"s3://{bucket}/jobs/j1", max_steps=5)
    uri = write_spec(s3, spec)
    assert uri == f"s3://{bucket}/jobs/j1/spec.json"
    assert TrainingSpec.model_validate_json(read_uri_bytes(uri, s3)) == spec

    assert read_progress(s3, spec.output) is None and read_latest(s3, spec.output) is None
    write_control(s3, spec.output, ControlRequest(request_id="r1", reason="move"))
    assert read_control(s3, spec.output) == ControlRequest(request_id="r1", reason="move")
    progress = Progress(state="training", step=3, max_steps=5, loss=2.5, updated_at=NOW, honoured_request_id="r0")
    write_progress(s3, spec.output, progress)
    assert read_progress(s3, spec.output) == progress


def test_write_spec_needs_an_s3_output(tiny_lm):
    spec = TrainingSpec(job_id="j1", model="gpt2", dataset="/d.txt", output="/tmp/out", max_steps=5)
    with pytest.raises(ValueError, match="s3://"):
        write_spec(None, spec)


def test_bad_documents_name_the_field():
    with pytest.raises(ValidationError, match="state"):
        Progress(state="sleeping", step=0, max_steps=1, updated_at=NOW)
    with pytest.raises(ValidationError, match="action"):
        ControlRequest(action="reboot", request_id="r")
    with pytest.raises(ValidationError, match="sha256"):
        CheckpointManifest(step=1, files=[{"key": "k", "size": 1, "sha256": "nothex"}], created_at=NOW)


def test_parse_corpus_txt_and_jsonl():
    assert parse_corpus(b"a b\n\n c \n", "x.txt") == ["a b", " c "]
    assert parse_corpus(b'{"text": "one"}\n\n{"text": "two"}\n', "x.jsonl") == ["one", "two"]
    with pytest.raises(ValueError, match="line 1.*text"):
        parse_corpus(b'{"body": "one"}\n', "x.jsonl")
    with pytest.raises(ValueError, match=".txt or .jsonl"):
        parse_corpus(b"", "x.csv")


def test_pack_blocks_and_too_small_dataset():
    blocks = pack_blocks([[1, 2, 3], [4, 5]], seq_len=3, eos_id=0)
    assert blocks.tolist() == [[1, 2, 3], [0, 4, 5]]
    with pytest.raises(ValueError, match="seq_len"):
        pack_blocks([[1]], seq_len=8, eos_id=None)


def test_sampler_order_is_a_function_of_seed_and_position_only():
    blocks = torch.arange(10).view(10, 1)
    sampler = BlockSampler(blocks, batch_size=4, seed=3)
    first_pass = [i for b in range(5) for i in sampler.indices(b)]
    assert sorted(first_pass[:10]) == list(range(10))  # epoch 0 covers every block once
    assert sorted(first_pass[10:20]) == list(range(10))
    assert BlockSampler(blocks, 4, seed=3).indices(4) == sampler.indices(4)  # a fresh sampler (a resume) agrees
    assert BlockSampler(blocks, 4, seed=4).indices(0) != sampler.indices(0)
