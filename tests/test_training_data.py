"""The fixed global batch: every step trains on batch_size x grad_accum samples dealt over the
ranks, so one process and a 2-process torchrun (gloo, CPU) of the same spec see the same samples,
the same loss and end with the same weights; more processes than samples are refused clearly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training.contract import METRICS, PROGRESS, parse_metrics
from training.data import StepDeal
from training.distributed import World
from training.exitcodes import EXIT_CHECKPOINTED, EXIT_DONE, EXIT_FAILED
from training.loop import TrainerIO, run_training
from training.spec import TrainingSpec
from training.stopping import StopFlag
from training.storage import LocalStore


@pytest.mark.parametrize("batch_size, grad_accum, world", [
    (2, 3, 1), (2, 3, 2), (2, 3, 4), (2, 5, 4), (1, 3, 2), (4, 1, 3), (3, 2, 6), (8, 1, 8),
])
def test_a_step_deals_each_of_its_samples_to_exactly_one_rank_in_micro_batches_of_at_most_batch_size(
    batch_size, grad_accum, world
):
    deal = StepDeal(batch_size, grad_accum, world)
    per_rank = [deal.micro_batches(rank) for rank in range(world)]
    dealt = sorted(p for batches in per_rank for batch in batches for p in batch)
    assert dealt == list(range(batch_size * grad_accum))  # the global batch, whatever the world size
    assert all(len(batches) == deal.micro_steps for batches in per_rank)  # the same passes on every rank
    assert all(0 < len(batches[0]) and all(len(b) <= batch_size for b in batches) for batches in per_rank)
    sizes = [sum(len(b) for b in batches) for batches in per_rank]
    assert max(sizes) - min(sizes) <= 1


def test_one_process_keeps_the_micro_batches_it_always_had_and_uneven_shares_get_padding_passes():
    assert StepDeal(2, 3, 1).micro_batches(0) == [range(0, 2), range(2, 4), range(4, 6)]
    assert StepDeal(2, 3, 2).micro_batches(1) == [range(3, 5), range(5, 6)]
    # 10 samples over 4 ranks: 2, 3, 2, 3; the ranks holding 2 do an empty (weight 0) second pass
    deal = StepDeal(2, 5, 4)
    assert [deal.micro_batches(r) for r in range(4)] == [
        [range(0, 2), range(2, 2)], [range(2, 4), range(4, 5)], [range(5, 7), range(7, 7)], [range(7, 9), range(9, 10)]]


def test_more_processes_than_samples_per_step_is_refused_and_the_optimizer_never_plans_it():
    from spotshift.hf import size_from_formula
    from spotshift.sizing import JobSizing, TrainingShape
    from spotshift.sizing.fit import max_world

    with pytest.raises(ValueError, match=r"4 processes but a global batch of 3 samples per step \(batch_size 1 x "
                                         r"grad_accum 3\).* Choose batch_size x grad_accum >= 4, or run at most 3"):
        StepDeal(1, 3, 4)
    model = size_from_formula({"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 256})
    for batch_size, grad_accum in [(1, 1), (1, 3), (4, 2)]:
        sizing = JobSizing(model=model, shape=TrainingShape(micro_batch=batch_size,
                                                            samples_per_step=batch_size * grad_accum))
        StepDeal(batch_size, grad_accum, max_world(sizing))  # the most GPUs the optimizer uses: accepted
        with pytest.raises(ValueError):
            StepDeal(batch_size, grad_accum, max_world(sizing) + 1)


def test_the_trainer_fails_clearly_when_started_on_more_processes_than_samples(tiny_lm, tmp_path):
    spec = TrainingSpec(job_id="wide", model=str(tiny_lm[0]), dataset=str(tiny_lm[1]), output=str(tmp_path / "out"),
                        max_steps=2, batch_size=1, grad_accum=2, seq_len=32, heartbeat_seconds=0.2)
    result = run_training(spec, TrainerIO(store=LocalStore(tmp_path / "out")), StopFlag(), World(0, 3, 0))
    assert result.exit_code == EXIT_FAILED and "3 processes but a global batch of 2 samples" in result.error
    progress = json.loads((tmp_path / "out" / PROGRESS).read_text())
    assert progress["state"] == "failed" and "run at most 2 processes" in progress["error"]


def rewrite_checkpoint_state(store: LocalStore, step: int, change) -> None:
    """Edit a checkpoint's trainer_state.json as an older trainer would have written it, and its
    manifests' size and sha256 to match (the checkpoint stays valid)."""
    import hashlib

    key = f"checkpoints/step-{step}/trainer_state.json"
    data = json.dumps(change(json.loads(store.get_bytes(key)))).encode()
    store.put_bytes(key, data)
    for manifest_key in ("checkpoints/LATEST.json", f"checkpoints/step-{step}/manifest.json"):
        manifest = json.loads(store.get_bytes(manifest_key))
        for entry in manifest["files"]:
            if entry["key"] == key:
                entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
        store.put_bytes(manifest_key, json.dumps(manifest).encode())


@pytest.mark.usefixtures("one_torch_thread")
def test_a_checkpoint_of_the_per_rank_batch_era_resumes_in_one_process_at_its_sample(tiny_lm, tmp_path, caplog):
    """Before the global batch was fixed, 2 ranks of batch_size 2 took 4 samples a step and saved
    no global_batch: one process resumes at the sample they reached (16 after 4 steps) and trains
    on 2 a step from there, saying so."""
    spec = TrainingSpec(job_id="old", model=str(tiny_lm[0]), dataset=str(tiny_lm[1]), output=str(tmp_path / "out"),
                        max_steps=6, batch_size=2, seq_len=32, checkpoint_every_steps=4, metrics_every_steps=1,
                        heartbeat_seconds=0.2, control_poll_seconds=0.2)
    store, flag = LocalStore(tmp_path / "out"), StopFlag()
    io = TrainerIO(store=store, on_step=lambda step, loss: flag.set("sigterm") if step == 4 else None)
    assert run_training(spec, io, flag).exit_code == EXIT_CHECKPOINTED

    def per_rank_era(state: dict) -> dict:
        del state["global_batch"]
        return state | {"world_size": 2, "samples_seen": 16, "data_position": 4}

    rewrite_checkpoint_state(store, 4, per_rank_era)
    with caplog.at_level("WARNING", logger="training"):
        resumed = run_training(spec, TrainerIO(store=store), StopFlag())
    assert resumed.exit_code == EXIT_DONE and resumed.start_step == 4, resumed.error
    assert [m.samples_seen for m in parse_metrics(store.get_bytes(METRICS))][-2:] == [18, 20]
    assert "trained on 4 samples per step; this run trains on 2" in caplog.text


def without_dropout(model_dir: Path, to: Path) -> Path:
    """The tiny model with dropout off: ranks draw their own dropout masks, so only a dropout-free
    model can give one process and two the same numbers."""
    shutil.copytree(model_dir, to)
    config = json.loads((to / "config.json").read_text())
    config.update(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    (to / "config.json").write_text(json.dumps(config))
    return to


def uneven_dataset(texts_file: Path, to: Path) -> Path:
    """Prompt/completion records whose completions differ in length (samples with different
    numbers of loss tokens: the loss must be the token mean of the global batch, not of a rank's)."""
    texts = [json.loads(line)["text"] for line in texts_file.read_text().splitlines()]
    lines = []
    for i, text in enumerate(texts[:120]):
        words = text.split()
        cut = 1 + i % max(1, len(words) - 1)
        lines.append(json.dumps({"prompt": " ".join(words[:cut]), "completion": " " + " ".join(words[cut:])}))
    to.write_text("\n".join(lines) + "\n")
    return to


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_processes_and_one_train_on_the_same_global_batch_to_the_same_weights(tiny_lm, tmp_path, sharding):
    """batch_size 1 x grad_accum 3: one process runs 3 micro-batches per step; two run rank 0 on 1
    sample (+ a padding pass) and rank 1 on 2. Same samples seen, same loss, same weights."""
    model = without_dropout(tiny_lm[0], tmp_path / "model")
    dataset = uneven_dataset(tiny_lm[1], tmp_path / "pairs.jsonl")

    def spec(name: str) -> TrainingSpec:
        return TrainingSpec(job_id="same", model=str(model), dataset=str(dataset), output=str(tmp_path / name),
                            device="cpu", max_steps=6, batch_size=1, grad_accum=3, seq_len=32, seed=5,
                            learning_rate=1e-2, checkpoint_every_steps=None, metrics_every_steps=1,
                            heartbeat_seconds=0.2, control_poll_seconds=0.2,
                            sharding=sharding if name == "two" else "auto")

    one = run_training(spec("one"), TrainerIO(store=LocalStore(tmp_path / "one")), StopFlag())
    assert one.exit_code == EXIT_DONE, one.error
    spec_file = tmp_path / "two.json"
    spec_file.write_text(spec("two").model_dump_json())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "training", "--spec", str(spec_file)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert f"2 processes, {sharding}" in two.stderr

    metrics = {name: parse_metrics((tmp_path / name / METRICS).read_bytes()) for name in ("one", "two")}
    assert [m.samples_seen for m in metrics["two"]] == [m.samples_seen for m in metrics["one"]] == [3, 6, 9, 12, 15, 18]
    assert metrics["one"][0].loss == pytest.approx(first_step_loss(spec("one")), rel=0, abs=1e-6)
    for a, b in zip(metrics["one"], metrics["two"]):
        assert b.loss == pytest.approx(a.loss, rel=0, abs=1e-5), a.step
    assert metrics["one"][-1].loss < metrics["one"][0].loss - 0.5  # it trained
    weights = {name: load_file(tmp_path / name / "final" / "model.safetensors") for name in ("one", "two")}
    assert weights["one"].keys() == weights["two"].keys()
    # float sums in another order, amplified by AdamW where a gradient is noise (the key bias has none)
    for name, tensor in weights["one"].items():
        assert torch.allclose(weights["two"][name], tensor, rtol=0, atol=1e-4), name


def first_step_loss(spec: TrainingSpec) -> float:
    """The loss of the first global batch under the initial weights, by hand: the mean over every
    loss token of its samples (not a mean of per-sample or per-micro-batch means)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.data import IGNORE, SampleStream, build_samples
    from training.model_source import load_records

    samples = build_samples(load_records(spec.dataset, "train", "text"), AutoTokenizer.from_pretrained(spec.model),
                            spec.seq_len)
    stream = SampleStream(samples, spec.seed)
    model = AutoModelForCausalLM.from_pretrained(spec.model, dtype=torch.float32)
    first_batch = stream.indices(0, spec.batch_size * spec.grad_accum)
    counts = []
    loss_sum = 0.0
    with torch.no_grad():
        for index in first_batch:
            input_ids, labels = stream.rows([index])
            counts.append(int((labels[:, 1:] != IGNORE).sum()))
            loss_sum += model(input_ids=input_ids, labels=labels).loss.item() * counts[-1]
    assert len(set(counts)) > 1  # samples of different lengths: the case where the two means differ
    return loss_sum / sum(counts)
