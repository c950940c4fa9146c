"""Training modes through the real trainer (in-process, LocalStore): spec validation, LoRA
checkpoints and final/ in PEFT's layout, fp16 loss scaling and gradient checkpointing resumed
exactly, prompt/completion loss masking, `datasets` splits with an eval loss, metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from training.contract import METRICS, parse_metrics
from training.data import IGNORE, PromptCompletion, build_samples, parse_records
from training.distributed import World, world_from_env
from training.exitcodes import EXIT_CHECKPOINTED, EXIT_DONE, EXIT_FAILED
from training.loop import TrainerIO, run_training
from training.precision import resolve_precision
from training.spec import TrainingSpec
from training.stopping import StopFlag
from training.storage import LocalStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def spec_for(tiny_lm, out: Path, **fields) -> TrainingSpec:
    model_dir, dataset = tiny_lm
    base = dict(job_id="modes", model=str(model_dir), dataset=str(dataset), output=str(out), max_steps=12,
                batch_size=2, seq_len=32, seed=3, learning_rate=3e-3, checkpoint_every_steps=4, keep_checkpoints=2,
                heartbeat_seconds=0.5, control_poll_seconds=0.5, metrics_every_steps=3)
    return TrainingSpec(**(base | fields))


def train(spec: TrainingSpec, stop_after: int | None = None):
    flag = StopFlag()

    def on_step(step, loss):
        if step == stop_after:
            flag.set("sigterm")

    store = LocalStore(Path(spec.output))
    return run_training(spec, TrainerIO(store=store, on_step=on_step), flag), store


# -- the spec ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fields, message", [
    ({"method": "dora"}, "method 'dora' is not allowed. Choose between full, lora, qlora"),
    ({"precision": "int8"}, "precision 'int8' is not allowed. Choose between auto, bf16, fp16, fp32"),
    ({"lora": {"r": 8}}, "need method lora or qlora. Choose between lora, qlora"),
    ({"method": "qlora", "device": "cpu"}, "qlora needs a CUDA GPU .* Choose between full, lora"),
    ({"eval_split": "test"}, "eval_split needs a dataset with splits"),
    ({"method": "lora", "lora": {"r": 0}}, "lora.r"),
    ({"sharding": "zero3"}, "sharding 'zero3' is not allowed. Choose between auto, ddp, fsdp"),
    ({"method": "lora", "sharding": "fsdp"}, "sharding fsdp needs method full, not lora. Choose between auto, ddp"),
])
def test_bad_modes_name_the_field_and_the_choices(fields, message):
    with pytest.raises(ValidationError, match=message):
        TrainingSpec(job_id="j", model="gpt2", dataset="/d.jsonl", output="/o", max_steps=1, **fields)


def test_a_spec_written_before_the_modes_still_validates_with_their_defaults():
    old = {"job_id": "j", "model": "gpt2", "dataset": "s3://b/d.txt", "output": "s3://b/jobs/j/", "max_steps": 5}
    spec = TrainingSpec.model_validate_json(json.dumps(old))
    assert (spec.method, spec.precision, spec.gradient_checkpointing, spec.lora) == ("full", "auto", False, None)
    assert (spec.dataset_split, spec.dataset_text_column, spec.metrics_every_steps) == ("train", "text", 10)
    assert spec.adapter.r == 16 and spec.adapter.alpha == 32


def test_auto_precision_is_fp32_on_cpu_and_explicit_choices_stay():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"


# -- data ------------------------------------------------------------------------------------


def test_prompt_completion_loss_counts_the_completion_only(tiny_lm):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm[0])
    raw = b'{"prompt": "spot price", "completion": " zone"}\n{"text": "the gpu train model"}\n'
    records = parse_records(raw, "pairs.jsonl")
    assert records[0] == PromptCompletion("spot price", " zone")
    samples = build_samples(records * 8, tokenizer, seq_len=32)
    prompt = tokenizer("spot price", add_special_tokens=False)["input_ids"]
    completion = tokenizer(" zone", add_special_tokens=False)["input_ids"]
    pair_rows = [i for i in range(len(samples)) if samples.labels[i, 0] == IGNORE]
    assert len(pair_rows) == 8
    row = pair_rows[0]
    n = len(prompt) + len(completion) + 1  # + eos
    assert n < 32
    assert samples.labels[row, :len(prompt)].tolist() == [IGNORE] * len(prompt)
    assert samples.labels[row, len(prompt):n].tolist() == completion + [tokenizer.eos_token_id]
    assert samples.labels[row, n:].tolist() == [IGNORE] * (32 - n)
    text_rows = [i for i in range(len(samples)) if i not in pair_rows]
    assert text_rows and all(torch.equal(samples.labels[i], samples.input_ids[i]) for i in text_rows)


def test_auto_sharding_is_fsdp_only_for_a_full_fine_tune_that_does_not_fit_one_gpu():
    from training.distributed import choose_sharding

    gib = 2**30
    eight_gpus = World(0, 8, 0)
    assert choose_sharding("auto", "full", eight_gpus, 8_000_000_000, 80 * gib) == "fsdp"  # 128 GB of state
    assert choose_sharding("auto", "full", eight_gpus, 1_000_000_000, 80 * gib) == "ddp"  # 16 GB
    assert choose_sharding("auto", "lora", eight_gpus, 8_000_000_000, 80 * gib) == "ddp"
    assert choose_sharding("auto", "full", World(), 8_000_000_000, 80 * gib) == "ddp"  # one process
    assert choose_sharding("auto", "full", eight_gpus, 8_000_000_000, None) == "ddp"  # CPU
    assert choose_sharding("fsdp", "full", eight_gpus, 1, None) == "fsdp"


def test_world_from_torchrun_environment():
    assert world_from_env({}) == World(0, 1, 0)
    assert world_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3"}) == World(3, 4, 3)
    with pytest.raises(ValueError, match="RANK"):
        world_from_env({"RANK": "4", "WORLD_SIZE": "4"})


# -- modes through the trainer ---------------------------------------------------------------


def test_lora_checkpoints_hold_the_adapter_and_final_is_peft_layout_with_merged_weights(tiny_lm, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    full, _ = train(spec_for(tiny_lm, tmp_path / "full"))
    spec = spec_for(tiny_lm, tmp_path / "lora", method="lora", merge_adapter=True, learning_rate=1e-2,
                    lora={"r": 4, "alpha": 8, "target_modules": ["c_attn"]})
    result, store = train(spec)
    assert full.exit_code == result.exit_code == EXIT_DONE, result.error
    names = {k.split("/")[-1] for k in store.list_keys("checkpoints/step-8/")}
    assert {"adapter_model.safetensors", "adapter_config.json", "optimizer.safetensors"} <= names
    assert "model.safetensors" not in names
    adapter_bytes = sum(len(store.get_bytes(k)) for k in store.list_keys("checkpoints/step-8/"))
    full_bytes = sum(len(LocalStore(tmp_path / "full").get_bytes(k))
                     for k in LocalStore(tmp_path / "full").list_keys("checkpoints/step-8/"))
    assert adapter_bytes < full_bytes / 4

    base = AutoModelForCausalLM.from_pretrained(tiny_lm[0])
    adapted = PeftModel.from_pretrained(base, tmp_path / "lora" / "final")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "lora" / "final" / "merged", dtype=torch.float32)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    adapted.eval(), merged.eval()
    with torch.no_grad():
        assert torch.allclose(adapted(ids).logits, merged(ids).logits, atol=1e-4)
        assert not torch.allclose(adapted(ids).logits, AutoModelForCausalLM.from_pretrained(tiny_lm[0])(ids).logits)


@pytest.mark.parametrize("fields", [
    {"precision": "fp16"},  # GradScaler: its state is in the checkpoint
    {"gradient_checkpointing": True, "grad_accum": 2},
    {"method": "lora", "precision": "bf16", "gradient_checkpointing": True},
], ids=["fp16-scaler", "grad-checkpointing", "lora-bf16-grad-checkpointing"])
def test_stop_and_resume_in_process_equals_an_uninterrupted_run(tiny_lm, tmp_path, fields):
    reference, _ = train(spec_for(tiny_lm, tmp_path / "reference", **fields))
    spec = spec_for(tiny_lm, tmp_path / "resumed", **fields)
    stopped, store = train(spec, stop_after=6)
    assert stopped.exit_code == EXIT_CHECKPOINTED and stopped.final_step == 6
    if fields.get("precision") == "fp16":
        assert "checkpoints/step-6/scaler.pt" in store.list_keys("checkpoints/step-6/")
    resumed, _ = train(spec)
    assert reference.exit_code == resumed.exit_code == EXIT_DONE, resumed.error
    assert resumed.start_step == 6 and resumed.final_loss == pytest.approx(reference.final_loss, abs=1e-6)
    assert resumed.precision == fields.get("precision", "fp32")


def test_dataset_directory_splits_give_a_training_and_an_eval_loss(tiny_lm, tmp_path, monkeypatch):
    """A directory in a Hub dataset repo's layout goes through datasets.load_dataset, the code path
    of hf://datasets/<owner>/<name> (offline: no Hub)."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    lines = [json.loads(line)["text"] for line in tiny_lm[1].read_text().splitlines()]
    data = tmp_path / "dataset" / "data"
    data.mkdir(parents=True)
    (data / "train.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in lines[:250]))
    (data / "test.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in lines[250:]))
    spec = spec_for(tiny_lm, tmp_path / "out", dataset=str(tmp_path / "dataset"), dataset_text_column="body",
                    eval_split="test", eval_every_steps=6)
    result, store = train(spec)
    assert result.exit_code == EXIT_DONE, result.error
    metrics = parse_metrics(store.get_bytes(METRICS))
    assert [m.step for m in metrics] == [3, 6, 9, 12]
    assert [m.eval_loss is not None for m in metrics] == [False, True, False, True]
    assert metrics[-1].eval_loss < metrics[1].eval_loss  # it learns
    assert metrics[-1].samples_seen == 12 * 2

    wrong = spec.model_copy(update={"dataset_text_column": "text", "output": str(tmp_path / "wrong")})
    failed, _ = train(wrong)
    assert failed.exit_code == EXIT_FAILED and "no column 'text'" in failed.error and "body" in failed.error


def test_qlora_without_a_gpu_fails_clearly(tiny_lm, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the CPU failure path cannot happen here")
    result, store = train(spec_for(tiny_lm, tmp_path / "q", method="qlora"))
    assert result.exit_code == EXIT_FAILED and "needs a CUDA GPU" in result.error
    assert json.loads(store.get_bytes("progress.json"))["state"] == "failed"


@pytest.mark.gpu
def test_qlora_trains_and_resumes_on_a_gpu(tiny_lm, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("QLoRA needs a CUDA GPU (bitsandbytes 4-bit); none here")
    pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes")
    spec = spec_for(tiny_lm, tmp_path / "q", method="qlora", lora={"r": 4, "target_modules": ["c_attn"]})
    stopped, _ = train(spec, stop_after=6)
    assert stopped.exit_code == EXIT_CHECKPOINTED
    resumed, _ = train(spec)
    assert resumed.exit_code == EXIT_DONE and resumed.start_step == 6, resumed.error
