"""Parameter counts without torch: config arithmetic (spotshift.sizing.architecture) against a model
transformers builds on the meta device, safetensors headers (local, sharded, S3 by ranged GETs, the
Hub from a server on 127.0.0.1) against the loaded model, and the orchestrator's entry points
importing and sizing without torch or transformers."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deployments.estimate_cli import size_on_meta_device
from spotshift.hf import model_size, safetensors_file_params, size_from_config, weight_params
from spotshift.sizing.architecture import FAMILIES
from spotshift.sizing.model import DEFAULT_LORA_TARGETS, ModelMetadataUnavailable
from spotshift.sizing.safetensors import NotSafetensors
from tests.local_hub import serve_hub

torch = pytest.importorskip("torch", reason="the train extra (torch, transformers) builds the reference models")
transformers = pytest.importorskip("transformers", reason="the train extra builds the reference models")

REPO = Path(__file__).resolve().parents[1]
LLAMA3_8B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
             "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
             "intermediate_size": 14336, "vocab_size": 128256, "max_position_embeddings": 8192,
             "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "hidden_act": "silu"}
SMALL = {"num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100}
# The configs the other tests size (gpt2 and llama), and a tiny one per family with its variants.
CONFIGS = {
    "gpt2-test-hf": {"model_type": "gpt2", "n_layer": 2, "n_embd": 32, "n_head": 2, "vocab_size": 100, "n_positions": 64},
    "gpt2-default-positions": {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 256},
    "gpt2-untied-n-inner": {"model_type": "gpt2", "n_embd": 32, "n_layer": 3, "n_head": 2, "vocab_size": 90,
                            "n_positions": 16, "n_inner": 48, "tie_word_embeddings": False},
    "llama-test-sizing": {"model_type": "llama", "vocab_size": 512, "hidden_size": 256, "intermediate_size": 704,
                          "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 1,
                          "tie_word_embeddings": False},
    "llama-small": {"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "num_key_value_heads": 4, "intermediate_size": 512, "vocab_size": 1000},
    "llama-tied-biases-head-dim": {"model_type": "llama", **SMALL, "hidden_size": 64, "num_key_value_heads": 2,
                                   "intermediate_size": 96, "head_dim": 32, "attention_bias": True, "mlp_bias": True,
                                   "tie_word_embeddings": True},
    "mistral": {"model_type": "mistral", **SMALL, "hidden_size": 64, "num_key_value_heads": 2, "intermediate_size": 128,
                "head_dim": 8},
    "qwen2": {"model_type": "qwen2", **SMALL, "hidden_size": 64, "num_key_value_heads": 2, "intermediate_size": 128},
    "qwen3-default-head-dim": {"model_type": "qwen3", **SMALL, "hidden_size": 64, "num_key_value_heads": 2,
                               "intermediate_size": 128},
    "qwen3-tied": {"model_type": "qwen3", **SMALL, "hidden_size": 64, "num_key_value_heads": 2, "intermediate_size": 128,
                   "head_dim": 16, "tie_word_embeddings": True},
    "gpt_neox": {"model_type": "gpt_neox", **SMALL, "hidden_size": 64, "intermediate_size": 128},
    "phi": {"model_type": "phi", **SMALL, "hidden_size": 64, "intermediate_size": 128},
    "phi-gqa-qk-layernorm": {"model_type": "phi", **SMALL, "hidden_size": 64, "intermediate_size": 96,
                             "num_key_value_heads": 2, "qk_layernorm": True, "tie_word_embeddings": True},
    "bloom": {"model_type": "bloom", "n_embed": 64, "n_layer": 2, "num_attention_heads": 4, "vocab_size": 100},
}


def meta_device_params(config: dict) -> int:
    """Today's count: the model transformers builds from `config` on the meta device."""
    fields = {k: v for k, v in config.items() if k not in ("model_type", "architectures")}
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(config["model_type"],
                                                                                                **fields))
    return sum(p.numel() for p in model.parameters())


def test_llama3_8b_config_sizes_to_the_meta_device_count_without_torch(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA3_8B))
    size = model_size(str(tmp_path))
    assert size.params_from == "config"
    assert size.params == meta_device_params(LLAMA3_8B)
    assert size.embedding_params == 2 * 128256 * 4096 and size.gated_mlp and size.n_kv_heads == 8


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_arithmetic_equals_the_meta_device_model(name):
    """Params, embeddings, gating and every linear layer (name, shape, count: what LoRA sizing reads)."""
    config = CONFIGS[name]
    arithmetic = size_from_config(config)
    assert arithmetic.params == meta_device_params(config)
    assert arithmetic == size_on_meta_device(config).model_copy(update={"params_from": "config"})


def test_every_family_is_checked_here():
    assert {c["model_type"] for c in CONFIGS.values()} == set(FAMILIES)


def test_lora_defaults_are_peft_defaults_without_importing_peft():
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as peft_defaults

    for model_type, targets in DEFAULT_LORA_TARGETS.items():
        assert targets == tuple(peft_defaults[model_type]), model_type
    for name, config in CONFIGS.items():
        size = size_from_config(config)
        assert size.lora_targets(None) == tuple(peft_defaults[config["model_type"]]), name
        assert size.lora_params(8, None) > 0  # the default targets are linear layers of the model


def test_an_unknown_model_type_is_sized_as_a_decoder_and_a_missing_shape_is_named():
    config = {**CONFIGS["llama-small"], "model_type": "some-new-arch", "hidden_act": "gelu"}
    size = size_from_config(config)
    assert not size.gated_mlp and {g.name for g in size.linears} >= {"q_proj", "up_proj", "down_proj"}
    with pytest.raises(ModelMetadataUnavailable, match="no n_heads .*num_attention_heads / n_head"):
        size_from_config({"model_type": "llama", "hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 4})


# --- safetensors headers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A tiny Llama saved sharded (model.safetensors.index.json + shards); (dir, model)."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                      tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(config)
    directory = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(directory, max_shard_size="20KB")
    return directory, model


def test_sharded_headers_count_the_loaded_model(tiny_llama):
    directory, model = tiny_llama
    shards = sorted(p.name for p in directory.glob("*.safetensors"))
    assert len(shards) > 1 and (directory / "model.safetensors.index.json").is_file()
    (directory / "adapter_model.safetensors").write_bytes((directory / shards[0]).read_bytes())  # not the model's
    loaded = transformers.AutoModelForCausalLM.from_pretrained(directory)
    expected = sum(p.numel() for p in loaded.parameters())
    assert expected == sum(p.numel() for p in model.parameters())
    assert sum(weight_params(str(directory)).values()) == expected == dict(weight_params(str(directory)))["F32"]
    size = model_size(str(directory))
    assert size.params == expected and size.params_from == "safetensors"


def test_a_single_file_header_counts_the_model_and_leaves_stored_buffers_out(tmp_path):
    """GPT-2 checkpoints on the Hub store each layer's causal mask (attn.bias) beside the weights."""
    from safetensors.torch import save_file

    config = CONFIGS["gpt2-test-hf"]
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config))
    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied
    tensors |= {f"transformer.h.{i}.attn.bias": torch.ones(1, 1, 64, 64) for i in range(2)}
    save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(config))
    expected = sum(p.numel() for p in model.parameters())
    assert sum(safetensors_file_params(tmp_path / "model.safetensors").values()) == expected
    assert model_size(str(tmp_path)).params == expected == size_from_config(config).params


def test_a_broken_header_and_a_missing_shard_are_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIGS["llama-small"]))
    (tmp_path / "model.safetensors").write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(NotSafetensors, match="model.safetensors: a safetensors header of 1000000000000 bytes"):
        model_size(str(tmp_path))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "part-1.safetensors"}}))
    with pytest.raises(ModelMetadataUnavailable, match="part-1.safetensors: named by model.safetensors.index.json"):
        model_size(str(tmp_path))


class RecordingS3:
    """The moto S3 client, recording each answered GetObject's key, Range and bytes."""

    def __init__(self, s3):
        self._s3, self.gets = s3, []

    def get_object(self, **kwargs):
        answer = self._s3.get_object(**kwargs)
        body = answer["Body"].read()
        self.gets.append((kwargs["Key"], kwargs.get("Range"), len(body)))
        return {**answer, "Body": io.BytesIO(body)}

    def __getattr__(self, name):
        return getattr(self._s3, name)


def test_s3_headers_by_ranged_gets_and_config_arithmetic_without_weights(tiny_llama, s3, bucket, aws_data_grant):
    aws_data_grant(f"s3://{bucket}/models/")
    directory, model = tiny_llama
    for path in directory.iterdir():
        s3.upload_file(str(path), bucket, f"models/tiny/{path.name}")
    recording = RecordingS3(s3)
    size = model_size(f"s3://{bucket}/models/tiny", s3_client=recording)
    assert size == model_size(str(directory))
    assert size.params == sum(p.numel() for p in model.parameters()) and size.params_from == "safetensors"
    weights = [(key, rng, n) for key, rng, n in recording.gets if key.endswith(".safetensors")]
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    shards = {name: (directory / name).stat().st_size for name in set(index["weight_map"].values())}
    assert {key.rsplit("/", 1)[1] for key, _, _ in weights} == set(shards)
    assert all(rng is not None for _, rng, _ in weights), "only ranged GETs of the weights"
    assert sum(n for _, _, n in weights) < sum(shards.values()) / 4, "headers only, never the weights"
    s3.put_object(Bucket=bucket, Key="models/config-only/config.json", Body=json.dumps(LLAMA3_8B).encode())
    alone = model_size(f"s3://{bucket}/models/config-only", s3_client=s3)
    assert alone.params_from == "config" and alone.params == size_from_config(LLAMA3_8B).params


# --- the Hub, from a server on 127.0.0.1 -------------------------------------------------------


@pytest.fixture
def local_hub(tiny_llama, monkeypatch):
    """A Hub on 127.0.0.1 serving the tiny Llama's single-file form (HEAD, ranged GETs); (endpoint, seen)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # conftest: offline; this Hub is local
    directory, model = tiny_llama
    from safetensors.torch import save_file

    single = directory.parent / "tiny-llama-single.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, single)
    files = {"config.json": (directory / "config.json").read_bytes(), "model.safetensors": single.read_bytes()}
    def answer(path: str):
        name = path.removeprefix("/org/tiny/resolve/main/")
        if name not in files:
            return None
        return files[name], {"ETag": f'"{name}"', "X-Repo-Commit": "0" * 40}

    with serve_hub(answer) as (endpoint, seen):
        yield endpoint, seen


def test_hub_safetensors_metadata_online_and_config_arithmetic_offline(local_hub, tiny_llama, tmp_path, monkeypatch):
    import huggingface_hub.constants
    from huggingface_hub import HfApi

    endpoint, seen = local_hub
    _, model = tiny_llama
    api = HfApi(endpoint=endpoint)
    online = model_size("org/tiny", hf_api=api, hub_cache_dir=tmp_path)
    assert online.params == sum(p.numel() for p in model.parameters()) and online.params_from == "safetensors"
    weights = [request for request in seen if "model.safetensors" in request and request.startswith("GET")]
    assert weights and all(" bytes=" in request for request in weights), "ranged GETs only"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    seen.clear()
    offline = model_size("org/tiny", hf_api=api, hub_cache_dir=tmp_path)  # config.json from the cache
    assert seen == [] and offline.params_from == "config"
    assert offline.params == online.params  # a Llama: the arithmetic is exact


# --- the orchestrator never loads torch ---------------------------------------------------------

ENTRY_POINTS = ("flows.train_job", "tasks", "flows.continuous_scout", "deployments.api")


def test_orchestrator_imports_and_sizes_a_job_without_torch_or_transformers(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA3_8B))
    script = textwrap.dedent(f"""
        import importlib, json, sys
        from datetime import UTC, datetime, timedelta
        import pkgutil
        for name in {ENTRY_POINTS!r}:
            importlib.import_module(name)
        for package in ("flows", "tasks", "blocks"):  # every module the orchestrator runs, new ones too
            for module in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
                importlib.import_module(module.name)
        from flows.train_job import model_needs
        from spotshift.estimate import estimate_offline
        from spotshift.models import JobCreate
        now = datetime(2026, 11, 28, 12, tzinfo=UTC)
        job = JobCreate.model_validate({{"model": {str(tmp_path)!r}, "dataset": "s3://bucket-x/train.jsonl",
            "max_steps": 100, "batch_size": 1, "seq_len": 512, "budget_usd": 1000, "method": "lora",
            "deadline": (now + timedelta(days=3)).isoformat(), "regions": ["us-east-1"]}}, context={{"now": now}})
        sizing = model_needs.fn(job, None)
        est = estimate_offline(job, now)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "peft"))
        print(json.dumps({{"params": sizing.model.params, "trainable": sizing.trainable_params,
                          "estimate": est.params, "loaded": loaded}}))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["loaded"] == []
    assert found["params"] == found["estimate"] == meta_device_params(LLAMA3_8B)
    # PEFT's default targets for llama, q_proj (4096 -> 4096) and v_proj (4096 -> 1024), rank 16: r x (in + out)
    assert found["trainable"] == 16 * 32 * ((4096 + 4096) + (4096 + 1024))


# --- spotshift estimate --meta-check -----------------------------------------------------------


def test_estimate_meta_check_reports_the_meta_device_count(tmp_path, capsys):
    import argparse
    from datetime import UTC, datetime, timedelta

    from deployments.estimate_cli import add_estimate_parser, run_estimate

    now = datetime.now(UTC)  # the CLI validates the job against the clock
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(CONFIGS["qwen2"]))
    job = {"model": str(model), "dataset": "s3://bucket-x/train.jsonl", "max_steps": 10, "batch_size": 1,
           "seq_len": 128, "budget_usd": 100, "deadline": (now + timedelta(days=3)).isoformat(), "regions": ["us-east-1"]}
    (tmp_path / "job.json").write_text(json.dumps(job))
    parser = argparse.ArgumentParser()
    add_estimate_parser(parser.add_subparsers(dest="command"))
    for flags in ([], ["--meta-check"]):
        run_estimate(parser.parse_args(["estimate", "--file", str(tmp_path / "job.json"), "--json", *flags]), now)
    plain, checked = (json.loads(chunk) for chunk in _json_documents(capsys.readouterr().out))
    assert plain["meta_device_params"] is None and plain["params_from"] == "config"
    assert checked["meta_device_params"] == checked["params"] == plain["params"] == meta_device_params(CONFIGS["qwen2"])
    assert checked["meta_check"].startswith("the meta-device count agrees")


def test_meta_check_sizes_an_architecture_without_arithmetic_by_the_meta_device(tmp_path):
    """Gemma has no arithmetic here (tied head, its own norms): without weights, the estimate is the
    decoder's guess, and --meta-check corrects it to the model transformers builds."""
    from datetime import UTC, datetime, timedelta

    from spotshift.estimate import estimate_offline
    from spotshift.models import JobCreate

    config = {"model_type": "gemma", **SMALL, "hidden_size": 64, "num_key_value_heads": 1, "intermediate_size": 128,
              "head_dim": 16}
    (tmp_path / "config.json").write_text(json.dumps(config))
    now = datetime(2026, 11, 28, 12, tzinfo=UTC)
    job = JobCreate.model_validate({"model": str(tmp_path), "dataset": "s3://bucket-x/train.jsonl", "max_steps": 10,
                                    "batch_size": 1, "seq_len": 128, "budget_usd": 100, "regions": ["us-east-1"],
                                    "deadline": (now + timedelta(days=3)).isoformat()}, context={"now": now})
    guess = estimate_offline(job, now)
    checked = estimate_offline(job, now, meta_size_of=size_on_meta_device)
    assert guess.params == size_from_config(config).params != meta_device_params(config)
    assert checked.params == checked.meta_device_params == meta_device_params(config)
    assert checked.params_from == "meta-device" and "sized with the meta-device count" in checked.meta_check


def _json_documents(text: str) -> list[str]:
    decoder, docs, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        _, end = decoder.raw_decode(text, i)
        docs.append(text[i:end])
        i = end
    return docs
