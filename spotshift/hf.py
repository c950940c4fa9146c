"""Hugging Face model metadata from the Hub, a local directory or S3: parameters and shape from
config.json alone (a model built on the meta device), stored weight bytes from safetensors headers.
Clients are passed in; nothing is downloaded but config.json and safetensors headers. What training
it needs is spotshift.sizing's."""

from __future__ import annotations

import functools
import json
import math
import struct
from collections import Counter
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from spotshift.models import classify_model_ref
from spotshift.sizing.model import LinearGroup, ModelSize

# Bytes per element of the safetensors dtypes (and the Hub's safetensors parameter keys).
DTYPE_BYTES: dict[str, float] = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1, "F4": 0.5,
}

# config.json spells the same things differently per architecture; first name found wins.
_CONFIG_ALIASES = {
    "n_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers"),
    "hidden": ("hidden_size", "n_embd", "d_model", "dim"),
    "n_heads": ("num_attention_heads", "n_head", "num_heads", "n_heads", "decoder_attention_heads"),
    "vocab": ("vocab_size",),
    "intermediate": ("intermediate_size", "n_inner", "ffn_dim", "d_ff", "hidden_dim"),
    "max_positions": ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len"),
}
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors format's own cap on the JSON header


class ModelMetadataUnavailable(ValueError):
    """The reference points at something without the metadata we need (no config, no safetensors)."""


class ModelMetadata(BaseModel):
    """What sizing needs to know about a model: its parameters, stored bytes and shape."""

    model_config = ConfigDict(frozen=True)

    ref: str
    source: str = Field(description="'hub', 'local' or 's3'")
    params: int = Field(ge=0, description="parameter count (every tensor in the safetensors files)")
    weight_bytes: int = Field(ge=0, description="bytes of the stored weights")
    dtype: str = Field(description="the dtype holding most parameters, e.g. 'F32', 'BF16'")
    model_type: str | None = None
    n_layers: int | None = None
    hidden: int | None = None
    n_heads: int | None = None
    vocab: int | None = None
    intermediate: int | None = None
    max_positions: int | None = None


# --- reading the metadata ----------------------------------------------------------------------


class HubApi(Protocol):
    """The two huggingface_hub.HfApi calls used here."""

    def model_info(self, repo_id: str, *, expand: list[str] | None = None, **kwargs) -> Any: ...
    def hf_hub_download(self, repo_id: str, filename: str, **kwargs) -> str: ...


def model_metadata(ref: str, *, hf_api: HubApi | None = None, s3_client=None,
                   hub_cache_dir: str | Path | None = None) -> ModelMetadata:
    """Metadata of a Hub repo id, a local directory or an s3:// prefix (config.json + safetensors headers).

    From the Hub: the safetensors parameter counts of `model_info` and the repo's config.json
    (cached in `hub_cache_dir`, default the Hugging Face cache). From S3: ranged GETs of the headers.
    """
    kind = classify_model_ref(ref)
    if kind == "local":
        return _from_local(ref)
    if kind == "s3":
        if s3_client is None:
            raise ValueError(f"model {ref!r} is on S3: pass s3_client (e.g. AwsCredentials.get_s3_client())")
        return _from_s3(ref, s3_client)
    if hf_api is None:
        from huggingface_hub import HfApi

        hf_api = HfApi()
    return _from_hub(ref, hf_api, hub_cache_dir)


def metadata_from(ref: str, source: str, config: dict[str, Any], dtype_params: dict[str, int]) -> ModelMetadata:
    """Build ModelMetadata from a config dict and the parameter count per stored dtype."""
    if not dtype_params:
        raise ModelMetadataUnavailable(f"model {ref!r}: no safetensors weights found")
    unknown = set(dtype_params) - set(DTYPE_BYTES)
    if unknown:
        raise ModelMetadataUnavailable(f"model {ref!r}: unknown dtype {sorted(unknown)[0]!r}")
    shape = {field: next((config[n] for n in names if isinstance(config.get(n), int)), None)
             for field, names in _CONFIG_ALIASES.items()}
    return ModelMetadata(
        ref=ref, source=source, params=sum(dtype_params.values()),
        weight_bytes=int(sum(n * DTYPE_BYTES[d] for d, n in dtype_params.items())),
        dtype=max(dtype_params, key=dtype_params.get), model_type=config.get("model_type"), **shape,
    )


def params_by_dtype(header: dict[str, Any]) -> Counter:
    """Parameter count per dtype from one safetensors JSON header."""
    counts: Counter = Counter()
    for name, tensor in header.items():
        if name != "__metadata__":
            counts[tensor["dtype"]] += math.prod(tensor["shape"])
    return counts


def read_safetensors_header(read_range) -> dict[str, Any]:
    """Parse a safetensors header given `read_range(start, length) -> bytes`: 8-byte LE length, then JSON."""
    (length,) = struct.unpack("<Q", read_range(0, 8))
    if length > _MAX_HEADER_BYTES:
        raise ModelMetadataUnavailable(f"safetensors header of {length} bytes is larger than the format allows")
    return json.loads(read_range(8, length))


def _from_local(ref: str) -> ModelMetadata:
    directory = Path(ref).expanduser()
    config = _load_json(directory / "config.json", ref)
    counts: Counter = Counter()
    for path in sorted(directory.glob("*.safetensors")):
        with path.open("rb") as f:
            counts += params_by_dtype(read_safetensors_header(lambda start, n: (f.seek(start), f.read(n))[1]))
    return metadata_from(ref, "local", config, counts)


def _from_s3(ref: str, s3) -> ModelMetadata:
    bucket, _, prefix = ref.removeprefix("s3://").partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", []) if "/" not in o["Key"][len(prefix):]]
    if prefix + "config.json" not in keys:
        raise ModelMetadataUnavailable(f"model {ref!r}: no config.json under the prefix")
    config = json.loads(s3.get_object(Bucket=bucket, Key=prefix + "config.json")["Body"].read())
    counts: Counter = Counter()
    for key in sorted(k for k in keys if k.endswith(".safetensors")):
        def read_range(start: int, n: int, key: str = key) -> bytes:
            return s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{start + n - 1}")["Body"].read()

        counts += params_by_dtype(read_safetensors_header(read_range))
    return metadata_from(ref, "s3", config, counts)


def _from_hub(ref: str, hf_api: HubApi, cache_dir: str | Path | None) -> ModelMetadata:
    info = hf_api.model_info(ref, expand=["safetensors", "config"])
    if info.safetensors is None:
        raise ModelMetadataUnavailable(f"model {ref!r}: the Hub lists no safetensors weights for it")
    extra = {"cache_dir": str(cache_dir)} if cache_dir is not None else {}
    config = _load_json(Path(hf_api.hf_hub_download(ref, "config.json", **extra)), ref)
    return metadata_from(ref, "hub", config, dict(info.safetensors.parameters))


def _load_json(path: Path, ref: str) -> dict[str, Any]:
    if not path.is_file():
        raise ModelMetadataUnavailable(f"model {ref!r}: no config.json at {path}")
    return json.loads(path.read_text())


# --- parameter counts from config.json alone ---------------------------------------------------


def model_size(ref: str, *, hf_api: HubApi | None = None, s3_client=None,
               hub_cache_dir: str | Path | None = None) -> ModelSize:
    """Parameters and shape of a Hub repo id, a local directory or an s3:// prefix, from its
    config.json alone (no weights read)."""
    return size_from_config(model_config(ref, hf_api=hf_api, s3_client=s3_client, hub_cache_dir=hub_cache_dir))


def model_config(ref: str, *, hf_api: HubApi | None = None, s3_client=None,
                 hub_cache_dir: str | Path | None = None) -> dict[str, Any]:
    """The config.json of a Hub repo id, a local directory or an s3:// prefix."""
    kind = classify_model_ref(ref)
    if kind == "local":
        return _load_json(Path(ref).expanduser() / "config.json", ref)
    if kind == "s3":
        if s3_client is None:
            raise ValueError(f"model {ref!r} is on S3: pass s3_client (e.g. AwsCredentials.get_s3_client())")
        from spotshift.aws.job_inputs import read_input_object  # typed errors naming the key, never retried

        folder = ref.rstrip("/") + "/"
        data = read_input_object(s3_client, folder + "config.json", field="model", grant=folder)
        if data is None:
            raise ModelMetadataUnavailable(f"model {ref!r}: no config.json under the prefix ({folder}config.json)")
        return json.loads(data)
    if hf_api is None:
        from huggingface_hub import HfApi

        hf_api = HfApi()
    extra = {"cache_dir": str(hub_cache_dir)} if hub_cache_dir is not None else {}
    return _load_json(Path(hf_api.hf_hub_download(ref, "config.json", **extra)), ref)


def size_from_config(config: dict[str, Any]) -> ModelSize:
    """ModelSize of the architecture `config` describes: a model built on the meta device (no
    memory, any architecture transformers knows), else the decoder formula when torch or
    transformers is absent or does not know the model type."""
    try:
        return _size_on_meta_device(json.dumps(config, sort_keys=True))
    except (ImportError, ValueError, KeyError):
        return size_from_formula(config)


@functools.lru_cache(maxsize=64)
def _size_on_meta_device(config_json: str) -> ModelSize:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = json.loads(config_json)
    fields = {k: v for k, v in config.items() if k not in ("model_type", "architectures", "auto_map")}
    cfg = AutoConfig.for_model(config["model_type"], **fields)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    linears: Counter = Counter()
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear):
            shape = (module.in_features, module.out_features)
        elif type(module).__name__ == "Conv1D" and weight is not None and weight.dim() == 2:
            shape = tuple(weight.shape)  # transformers' Conv1D stores (in, out)
        else:
            continue
        linears[(name.rsplit(".", 1)[-1], *shape)] += 1
    params = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    untied = head is not None and head.weight is not embed
    embedding_params = embed.numel() + (head.weight.numel() if untied else 0)
    return _model_size(config, params, embedding_params,
                       tuple(LinearGroup(name=n, in_features=i, out_features=o, count=c)
                             for (n, i, o), c in linears.items()))


def size_from_formula(config: dict[str, Any]) -> ModelSize:
    """ModelSize of a Llama-style decoder (attention with grouped KV heads, gated or plain MLP,
    two norms per layer) from the config's shape fields: the fallback without torch."""
    s = _shape(config)
    h, L, kv, inter = s["hidden"], s["n_layers"], s["n_kv_heads"] * (s["hidden"] // s["n_heads"]), s["intermediate"]
    gated = config.get("hidden_act", config.get("activation_function", "silu")) in ("silu", "swiglu", "swish")
    groups = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h), "up_proj": (h, inter),
              "down_proj": (inter, h), **({"gate_proj": (h, inter)} if gated else {})}
    blocks = [LinearGroup(name=n, in_features=i, out_features=o, count=L) for n, (i, o) in groups.items()]
    tied = bool(config.get("tie_word_embeddings", False))
    head = [] if tied else [LinearGroup(name="lm_head", in_features=h, out_features=s["vocab"], count=1)]
    embedding_params = s["vocab"] * h * (1 if tied else 2)
    params = embedding_params + sum(g.in_features * g.out_features * g.count for g in blocks) + (2 * L + 1) * h
    linears = tuple(blocks + head)
    return _model_size(config, params, embedding_params, linears)


def _shape(config: dict[str, Any]) -> dict[str, int]:
    found = {field: next((config[n] for n in names if isinstance(config.get(n), int)), None)
             for field, names in _CONFIG_ALIASES.items()}
    missing = [f for f in ("n_layers", "hidden", "n_heads", "vocab") if not found[f]]
    if missing:
        raise ModelMetadataUnavailable(f"config.json has no {missing[0]} ({' / '.join(_CONFIG_ALIASES[missing[0]])})")
    kv = config.get("num_key_value_heads") or config.get("n_head_kv") or found["n_heads"]
    return {**found, "n_kv_heads": int(kv), "intermediate": found["intermediate"] or 4 * found["hidden"]}


def _model_size(config: dict[str, Any], params: int, embedding_params: int,
                linears: tuple[LinearGroup, ...]) -> ModelSize:
    s = _shape(config)
    gate_width = sum(g.out_features * g.count for g in linears
                     if g.in_features == s["hidden"] and g.out_features in (s["intermediate"], 2 * s["intermediate"]))
    return ModelSize(params=params, embedding_params=embedding_params, model_type=config.get("model_type"),
                     n_layers=s["n_layers"], hidden=s["hidden"], n_heads=s["n_heads"], n_kv_heads=s["n_kv_heads"],
                     intermediate=s["intermediate"], vocab=s["vocab"],
                     gated_mlp=gate_width >= 2 * s["intermediate"] * s["n_layers"],
                     linears=tuple(sorted(linears, key=lambda g: (g.name, g.in_features, g.out_features))))
