"""training.checkpoint through the real trainer: LATEST written last, retention, sha256 verification,
fallback from a truncated newest checkpoint to the previous one (moto S3)."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from training.checkpoint import MANIFEST, fetch_latest_complete, steps_to_delete
from training.contract import LATEST, PROGRESS, TrainerState, checkpoint_prefix, read_latest, read_progress
from training.exitcodes import EXIT_DONE, EXIT_PERMANENT
from training.loop import TrainerIO, run_training
from training.spec import TrainingSpec
from training.stopping import StopFlag
from training.storage import S3Store
from training.versions import minor_release, running_versions

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


# -- the library versions a checkpoint records, and the resume check ---------------------------


class ReadLog:
    """An object store that notes every key read (to tell what a refused resume touched)."""

    def __init__(self, store):
        self._store, self.read = store, []

    def __getattr__(self, name):
        return getattr(self._store, name)

    def get_bytes(self, key, *args, **kwargs):
        self.read.append(key)
        return self._store.get_bytes(key, *args, **kwargs)

    def get_buffer(self, key, *args, **kwargs):
        self.read.append(key)
        return self._store.get_buffer(key, *args, **kwargs)


def rewrite_versions(store, step: int, **changes) -> None:
    """LATEST.json and step-<N>/manifest.json as if written with other versions (None: without
    a versions field, as before they were recorded)."""
    doc = json.loads(store.get_bytes(LATEST))
    if changes.pop("unrecorded", False):
        del doc["versions"]
    else:
        doc["versions"] |= changes
    for key in (LATEST, checkpoint_prefix(step) + MANIFEST):
        store.put_bytes(key, json.dumps(doc).encode())


def listing(store) -> dict[str, int]:
    """Every key under the job's prefix with its size, but the heartbeat."""
    return {key: len(store.get_bytes(key)) for key in store.list_keys("") if key != PROGRESS}


def test_a_checkpoint_records_the_library_versions_that_wrote_it(trained, s3):
    from importlib.metadata import version

    spec, store = trained
    latest = read_latest(s3, spec.output)
    assert latest.versions == running_versions()
    assert latest.versions.transformers == version("transformers") and latest.versions.torch == version("torch")
    step_manifest = json.loads(store.get_bytes(checkpoint_prefix(15) + MANIFEST))
    assert step_manifest["versions"]["transformers"] == version("transformers")


def test_a_checkpoint_of_another_transformers_minor_version_is_refused_before_anything_is_loaded(
    trained, s3, tmp_path
):
    spec, store = trained
    running = running_versions().transformers
    major, minor = minor_release(running)
    written = f"{major}.{minor + 1}.0"
    rewrite_versions(store, 15, transformers=written)
    before = listing(store)
    reads = ReadLog(store)

    result = run_training(spec.model_copy(update={"max_steps": 22}), TrainerIO(store=reads, s3=s3, scratch=tmp_path),
                          StopFlag())

    assert result.exit_code == EXIT_PERMANENT
    progress = read_progress(s3, spec.output)
    assert progress.state is TrainerState.failed and progress.permanent
    assert f"checkpoint step-15 was written with transformers {written}" in progress.error
    assert f"this trainer has transformers {running}" in progress.error
    assert progress.step == 0 and progress.resumed_from_step is None  # it never trained
    assert not [key for key in reads.read if key.startswith(checkpoint_prefix(15)) and key != checkpoint_prefix(15)
                + MANIFEST]  # no weights, no optimizer state downloaded
    assert listing(store) == before  # nothing written but the heartbeat


def test_a_patch_level_transformers_difference_resumes_with_a_warning(trained, s3, tmp_path, caplog):
    spec, store = trained
    running = running_versions()
    major, minor = minor_release(running.transformers)
    rewrite_versions(store, 15, transformers=f"{major}.{minor}.999", torch="0.0.1")

    with caplog.at_level(logging.WARNING, logger="training.versions"):
        assert train(spec.model_copy(update={"max_steps": 22}), s3, tmp_path) == EXIT_DONE

    progress = read_progress(s3, spec.output)
    assert progress.resumed_from_step == 15 and progress.step == 22
    warned = [r.getMessage() for r in caplog.records]
    assert any(f"transformers {major}.{minor}.999" in m and f"transformers {running.transformers}" in m
               for m in warned)
    assert any("torch 0.0.1" in m for m in warned)


def test_a_checkpoint_written_before_versions_were_recorded_resumes_with_a_note(trained, s3, tmp_path, caplog):
    spec, store = trained
    rewrite_versions(store, 15, unrecorded=True)
    assert read_latest(s3, spec.output).versions is None

    with caplog.at_level(logging.WARNING, logger="training.versions"):
        assert train(spec.model_copy(update={"max_steps": 22}), s3, tmp_path) == EXIT_DONE

    progress = read_progress(s3, spec.output)
    assert progress.resumed_from_step == 15 and progress.step == 22
    assert any("step-15 records no library versions" in r.getMessage() for r in caplog.records)
    assert read_latest(s3, spec.output).versions == running_versions()  # its next checkpoint records them
