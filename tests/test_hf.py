"""Model metadata from a local directory, S3 (ranged GETs only) and recorded Hub replies; sizes from config.json."""

from __future__ import annotations

import json
import sys

import pytest

from spotshift.hf import ModelMetadataUnavailable, model_metadata, model_size, size_from_config, size_from_formula
from spotshift.sizing import JobSizing, TrainingShape, gpu_memory
from tests.local_hub import serve_hub

torch = pytest.importorskip("torch", reason="the train extra (torch, transformers) builds the tiny model")
transformers = pytest.importorskip("transformers", reason="the train extra builds the tiny model")

TINY = dict(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=64)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 2-layer GPT-2 built from a config (no download), saved as safetensors; (dir, model)."""
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**TINY))
    directory = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(directory, safe_serialization=True)
    return directory, model


def test_local_directory_metadata_matches_the_model(tiny_model):
    directory, model = tiny_model
    meta = model_metadata(str(directory))
    expected = sum(p.numel() for p in model.parameters())
    assert meta.source == "local" and meta.dtype == "F32" and meta.model_type == "gpt2"
    assert meta.params == expected
    assert meta.weight_bytes == 4 * expected
    assert (meta.n_layers, meta.hidden, meta.n_heads, meta.vocab, meta.max_positions) == (2, 32, 2, 100, 64)


class CountingS3:
    """The real moto S3 client, recording each GetObject's key and byte range."""

    def __init__(self, s3):
        self._s3, self.gets = s3, []

    def get_object(self, **kwargs):
        self.gets.append((kwargs["Key"], kwargs.get("Range")))
        return self._s3.get_object(**kwargs)

    def get_paginator(self, name):
        return self._s3.get_paginator(name)


def test_s3_prefix_reads_only_config_and_safetensors_headers(tiny_model, s3, bucket):
    directory, model = tiny_model
    for path in directory.iterdir():
        s3.upload_file(str(path), bucket, f"models/tiny/{path.name}")
    s3.put_object(Bucket=bucket, Key="models/tiny/nested/ignored.safetensors", Body=b"not a header")
    counting = CountingS3(s3)
    meta = model_metadata(f"s3://{bucket}/models/tiny", s3_client=counting)
    assert meta == model_metadata(str(directory)).model_copy(update={"ref": f"s3://{bucket}/models/tiny", "source": "s3"})
    weights = (directory / "model.safetensors").stat().st_size
    fetched = [(key, rng) for key, rng in counting.gets if key.endswith(".safetensors")]
    assert [rng for _, rng in fetched][0] == "bytes=0-7"
    header_len = int.from_bytes((directory / "model.safetensors").read_bytes()[:8], "little")
    assert fetched[1][1] == f"bytes=8-{8 + header_len - 1}"
    assert len(fetched) == 2 and 8 + header_len < weights / 10, "never the whole weights"


def test_s3_prefix_without_config_is_a_clear_error(s3, bucket, aws_data_grant):
    aws_data_grant(f"s3://{bucket}/empty/")  # the user's model prefix, granted as `spotshift aws setup --data` would
    s3.put_object(Bucket=bucket, Key="empty/readme.md", Body=b"x")
    with pytest.raises(ModelMetadataUnavailable, match="no config.json"):
        model_metadata(f"s3://{bucket}/empty", s3_client=s3)


def test_s3_without_a_client_says_what_to_pass():
    with pytest.raises(ValueError, match="s3_client"):
        model_metadata("s3://bucket-x/models/tiny")


def test_local_directory_without_weights_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ModelMetadataUnavailable, match="no safetensors"):
        model_metadata(str(tmp_path))


# --- the Hub, from recorded replies served on 127.0.0.1 ----------------------------------------

# Recorded from https://huggingface.co/api/models/openai-community/gpt2?expand=safetensors&expand=config
# (trimmed to the fields read) and the repo's config.json.
RECORDED_MODEL_INFO = {
    "_id": "621ffdc036468d709f17434d", "id": "openai-community/gpt2",
    "config": {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "tokenizer_config": {}},
    "safetensors": {"parameters": {"F32": 137022720}, "total": 137022720},
    "sha": "607a30d783dfa663caf39e06633721c8d4cfcd7e",
}
RECORDED_CONFIG = {
    "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
    "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12, "n_positions": 1024, "vocab_size": 50257,
}


@pytest.fixture
def recorded_hub(monkeypatch):
    """An HTTP server on 127.0.0.1 replaying the recorded Hub replies; yields (endpoint, requests seen)."""
    import huggingface_hub.constants

    # conftest sets HF_HUB_OFFLINE=1 so nothing reaches the real Hub; this server is local.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    headers = {"Content-Type": "application/json", "ETag": '"recorded-config"',
               "X-Repo-Commit": RECORDED_MODEL_INFO["sha"]}

    def answer(path: str):
        if path.startswith("/api/models/openai-community/gpt2"):
            return json.dumps(RECORDED_MODEL_INFO).encode(), headers
        if path == "/openai-community/gpt2/resolve/main/config.json":
            return json.dumps(RECORDED_CONFIG).encode(), headers
        return None

    with serve_hub(answer) as (endpoint, seen):
        yield endpoint, seen


def test_hub_metadata_from_model_info_and_config(recorded_hub, tmp_path):
    from huggingface_hub import HfApi

    endpoint, seen = recorded_hub
    meta = model_metadata("openai-community/gpt2", hf_api=HfApi(endpoint=endpoint), hub_cache_dir=tmp_path)
    assert meta.source == "hub" and meta.params == 137_022_720 and meta.weight_bytes == 4 * 137_022_720
    assert (meta.n_layers, meta.hidden, meta.n_heads, meta.vocab) == (12, 768, 12, 50257)
    assert seen[0] == "GET /api/models/openai-community/gpt2?expand=safetensors&expand=config"
    assert not any(".safetensors" in request for request in seen), "no weights fetched"


def test_hub_repo_without_safetensors_is_a_clear_error(recorded_hub, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    monkeypatch.setitem(RECORDED_MODEL_INFO, "safetensors", None)
    with pytest.raises(ModelMetadataUnavailable, match="no safetensors"):
        model_metadata("openai-community/gpt2", hf_api=HfApi(endpoint=recorded_hub[0]), hub_cache_dir=tmp_path)


# --- memory -------------------------------------------------------------------------------------


def test_model_states_of_the_sizing_model_match_a_real_adamw_step(tiny_model):
    """Weights + gradients + AdamW moments, as bytes of the real tensors after one optimizer step."""
    directory, _ = tiny_model
    model = transformers.GPT2LMHeadModel.from_pretrained(directory)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = torch.randint(0, TINY["vocab_size"], (2, 16))
    model(input_ids=batch, labels=batch).loss.backward()
    optimizer.step()
    params = list(model.parameters())
    measured = sum(p.nbytes + p.grad.nbytes for p in params) + sum(
        state[k].nbytes for state in optimizer.state.values() for k in ("exp_avg", "exp_avg_sq"))
    sizing = JobSizing(model=model_size(str(directory)), shape=TrainingShape(method="full", precision="fp32",
                                                                           micro_batch=2, seq_len=16))
    estimated = gpu_memory(sizing, "fp32")
    assert estimated.weights + estimated.trainable_states == measured


# --- parameter counts from config.json alone ---------------------------------------------------

LLAMA3_8B_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
                    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                    "intermediate_size": 14336, "vocab_size": 128256, "max_position_embeddings": 8192,
                    "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "hidden_act": "silu",
                    "torch_dtype": "bfloat16"}


def test_llama3_8b_is_sized_from_its_config_alone(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA3_8B_CONFIG))
    size = model_size(str(tmp_path))
    assert size.params == 8_030_261_248  # Meta's published count for Llama-3-8B
    assert size.embedding_params == 2 * 128256 * 4096 and size.gated_mlp and size.n_kv_heads == 8
    assert {g.name for g in size.linears} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                              "down_proj", "lm_head"}
    assert size_from_formula(LLAMA3_8B_CONFIG) == size  # the fallback without torch agrees


def test_meta_device_count_matches_the_built_model(tiny_model):
    directory, model = tiny_model
    size = model_size(str(directory))
    assert size.params == sum(p.numel() for p in model.parameters())
    assert size.model_type == "gpt2" and not size.gated_mlp
    # GPT-2's Conv1D layers count as linear layers: both c_proj shapes (attention and MLP) are there
    assert sorted((g.name, g.in_features, g.out_features) for g in size.linears if g.name == "c_proj") == [
        ("c_proj", 32, 32), ("c_proj", 128, 32)]


def test_config_on_s3_is_read_without_weights(s3, bucket, tmp_path, aws_data_grant):
    aws_data_grant(f"s3://{bucket}/models/")  # the user's models, granted as `spotshift aws setup --data` would
    s3.put_object(Bucket=bucket, Key="models/llama/config.json", Body=json.dumps(LLAMA3_8B_CONFIG).encode())
    assert model_size(f"s3://{bucket}/models/llama", s3_client=s3).params == 8_030_261_248
    with pytest.raises(ModelMetadataUnavailable, match="no config.json"):
        model_size(f"s3://{bucket}/models/none", s3_client=s3)


def test_without_torch_the_formula_sizes_the_model(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # an install without the train extra
    assert size_from_config(LLAMA3_8B_CONFIG).params == 8_030_261_248


def test_a_config_without_a_shape_is_refused_naming_the_field():
    with pytest.raises(ModelMetadataUnavailable, match="no hidden"):
        size_from_config({"model_type": "unknown-arch", "num_hidden_layers": 2, "num_attention_heads": 2,
                          "vocab_size": 10})
