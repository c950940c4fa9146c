"""training.checkpoint through the real trainer: LATEST written last, retention, sha256 verification,
fallback from a truncated newest checkpoint to the previous one (moto S3)."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from training.checkpoint import fetch_latest_complete, steps_to_delete
from training.contract import LATEST, read_latest, read_progress
from training.exitcodes import EXIT_DONE
from training.loop import TrainerIO, run_training
from training.spec import TrainingSpec
from training.stopping import StopFlag
from training.storage import S3Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_spec(tiny_lm, bucket: str, **overrides) -> TrainingSpec:
    model_dir, dataset = tiny_lm
    fields = dict(job_id="ckpt", model=str(model_dir), dataset=str(dataset), output=f"s3://{bucket}/jobs/ckpt/",
                  max_steps=20, batch_size=2, seq_len=32, checkpoint_every_steps=5, keep_checkpoints=2,
                  heartbeat_seconds=0.5, control_poll_seconds=0.5)
    return TrainingSpec(**(fields | overrides))


def train(spec: TrainingSpec, s3, tmp_path) -> int:
    store = S3Store.from_uri(s3, spec.output)
    return run_training(spec, TrainerIO(store=store, s3=s3, scratch=tmp_path), StopFlag()).exit_code


@pytest.fixture
def trained(tiny_lm, s3, bucket, tmp_path):
    """A finished 20-step job (checkpoints every 5, keep 2)."""
    spec = tiny_spec(tiny_lm, bucket)
    assert train(spec, s3, tmp_path) == EXIT_DONE
    return spec, S3Store.from_uri(s3, spec.output)


def test_keeps_the_newest_k_checkpoints_with_complete_manifests(trained, s3):
    spec, store = trained
    steps = {key.split("/")[1] for key in store.list_keys("checkpoints/step-")}
    assert steps == {"step-10", "step-15"}
    latest = read_latest(s3, spec.output)
    assert latest.step == 15
    stored = {key: len(store.get_bytes(key)) for key in store.list_keys("checkpoints/step-15/")}
    assert {f.key: f.size for f in latest.files} == {k: n for k, n in stored.items() if not k.endswith("manifest.json")}
    names = {f.key.rsplit("/", 1)[1] for f in latest.files}
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "trainer_state.json"} <= names
    state = json.loads(store.get_bytes("checkpoints/step-15/trainer_state.json"))
    assert state["step"] == 15 and state["data_position"] == 15 * spec.grad_accum
    assert {k.split("/", 1)[1] for k in store.list_keys("final/")} >= {"config.json", "model.safetensors", "tokenizer.json"}


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(trained, s3, tmp_path, caplog):
    spec, store = trained
    weights = "checkpoints/step-15/model.safetensors"
    store.put_bytes(weights, store.get_bytes(weights)[:100])

    with caplog.at_level(logging.WARNING, logger="training.checkpoint"):
        restored = fetch_latest_complete(store, tmp_path)
    assert restored.manifest.step == 10
    assert any("step-15" in r.getMessage() and "unusable" in r.getMessage() for r in caplog.records)

    resumed = spec.model_copy(update={"max_steps": 22})
    assert train(resumed, s3, tmp_path) == EXIT_DONE
    progress = read_progress(s3, spec.output)
    assert progress.resumed_from_step == 10 and progress.step == 22


def test_altered_bytes_of_the_same_size_are_caught_by_sha256(trained, tmp_path):
    _, store = trained
    key = "checkpoints/step-15/optimizer.pt"
    data = bytearray(store.get_bytes(key))
    data[-1] ^= 0xFF
    store.put_bytes(key, bytes(data))
    assert fetch_latest_complete(store, tmp_path).manifest.step == 10


def test_checkpoint_without_manifest_is_invisible(trained, tmp_path):
    """A kill -9 during upload leaves files but no manifest: it must not be resumed from."""
    _, store = trained
    store.put_bytes("checkpoints/step-99/model.safetensors", b"partial")
    assert fetch_latest_complete(store, tmp_path).manifest.step == 15


def test_no_checkpoint_at_all(s3, bucket, tmp_path):
    assert fetch_latest_complete(S3Store(s3, bucket, "jobs/none/"), tmp_path) is None


def test_resumed_weights_equal_the_checkpointed_weights(trained, tmp_path):
    from safetensors.torch import load

    _, store = trained
    restored = fetch_latest_complete(store, tmp_path)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(restored.directory)
    saved = load(store.get_bytes("checkpoints/step-15/model.safetensors"))
    for name, tensor in saved.items():
        assert torch.equal(model.state_dict()[name], tensor), name


@pytest.mark.parametrize("stored, complete, keep, doomed", [
    ({5, 10, 15}, {5, 10, 15}, 2, [5]),
    ({5, 10, 15, 20}, {5, 10, 15}, 2, [5]),  # 20 is partial (no manifest): kept, not counted
    ({3, 5, 10}, {5, 10}, 2, [3]),  # an old partial one goes too
    ({5}, {5}, 2, []),
    ({5, 10}, set(), 1, []),
])
def test_steps_to_delete(stored, complete, keep, doomed):
    assert steps_to_delete(stored, complete, keep) == doomed


def test_optimizer_tensors_found_corrupt_at_the_first_update_fall_back_to_the_previous_checkpoint(
    trained, s3, tmp_path
):
    """The optimizer's tensors arrive while the model loads and the first step runs: a bad one is
    found only then, and the trainer starts over from the previous checkpoint."""
    spec, store = trained
    key = "checkpoints/step-15/optimizer.safetensors"
    data = bytearray(store.get_bytes(key))
    data[-1] ^= 0xFF
    store.put_bytes(key, bytes(data))
    resumed = spec.model_copy(update={"max_steps": 22})
    assert train(resumed, s3, tmp_path) == EXIT_DONE
    progress = read_progress(s3, spec.output)
    assert progress.resumed_from_step == 10 and progress.step == 22
