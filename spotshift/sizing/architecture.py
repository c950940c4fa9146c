"""A model's parameters and linear layers from its config.json alone, by arithmetic over the
architecture (no torch): the same counts and layer shapes a model built on the meta device has."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from spotshift.sizing.model import LinearGroup, ModelMetadataUnavailable, ModelSize

# config.json spells the same things differently per architecture; first name found wins.
CONFIG_ALIASES = {
    "n_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers"),
    "hidden": ("hidden_size", "n_embd", "n_embed", "d_model", "dim"),
    "n_heads": ("num_attention_heads", "n_head", "num_heads", "n_heads", "decoder_attention_heads"),
    "vocab": ("vocab_size",),
    "intermediate": ("intermediate_size", "n_inner", "ffn_dim", "d_ff", "hidden_dim"),
    "max_positions": ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len"),
}
_REQUIRED = ("n_layers", "hidden", "n_heads", "vocab")


def shape_of(config: dict[str, Any]) -> dict[str, int | None]:
    """The shape fields of `config` under their common names (None where absent)."""
    return {field: next((config[n] for n in names if isinstance(config.get(n), int)), None)
            for field, names in CONFIG_ALIASES.items()}


class _Counts:
    """Parameters and linear layers (by module name and shape) of one architecture, added up."""

    def __init__(self) -> None:
        self.params = 0
        self.linears: Counter = Counter()

    def linear(self, name: str, in_features: int, out_features: int, count: int, bias: bool = False) -> None:
        self.linears[(name, in_features, out_features)] += count
        self.params += count * (in_features * out_features + (out_features if bias else 0))

    def add(self, params: int) -> None:
        self.params += params


def _decoder(config: dict[str, Any], *, qkv_bias: bool | None = None, head_dim_default: int | None = None,
             qk_norm: bool = False, gated: bool = True) -> tuple[_Counts, int]:
    """Llama-style decoder: grouped-KV attention (q, k, v, o), gated MLP (gate, up, down), RMS norms
    (weights only) before attention, before the MLP and after the last layer; lm_head untied unless
    the config ties it. Llama's attention_bias/mlp_bias, Qwen2's q/k/v biases, Qwen3's q/k norms."""
    s = _shape(config)
    h, L, heads, vocab, inter = s["hidden"], s["n_layers"], s["n_heads"], s["vocab"], s["intermediate"]
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or head_dim_default or h // heads)
    attention_bias = bool(config.get("attention_bias", False))
    mlp_bias = bool(config.get("mlp_bias", False))
    qkv = attention_bias if qkv_bias is None else qkv_bias
    c = _Counts()
    c.linear("q_proj", h, heads * head_dim, L, bias=qkv)
    c.linear("k_proj", h, kv_heads * head_dim, L, bias=qkv)
    c.linear("v_proj", h, kv_heads * head_dim, L, bias=qkv)
    c.linear("o_proj", heads * head_dim, h, L, bias=attention_bias)
    mlp = (("gate_proj", h, inter),) if gated else ()
    for name, i, o in (*mlp, ("up_proj", h, inter), ("down_proj", inter, h)):
        c.linear(name, i, o, L, bias=mlp_bias)
    c.add(L * 2 * h + h + (L * 2 * head_dim if qk_norm else 0))
    return c, _with_embeddings(c, config, vocab, h, tied_default=False)


def _gpt2(config: dict[str, Any]) -> tuple[_Counts, int]:
    """GPT-2: learned positions, LayerNorms with bias, Conv1D layers stored (in, out) with bias:
    c_attn (q, k, v fused), c_proj, c_fc, c_proj; lm_head tied to the embeddings by default."""
    s = _shape(config)
    h, L, vocab = s["hidden"], s["n_layers"], s["vocab"]
    inter = config.get("n_inner") or 4 * h
    positions = config.get("n_positions", 1024)
    c = _Counts()
    c.linear("c_attn", h, 3 * h, L, bias=True)
    c.linear("c_proj", h, h, L, bias=True)
    c.linear("c_fc", h, inter, L, bias=True)
    c.linear("c_proj", inter, h, L, bias=True)
    c.add(positions * h + L * 4 * h + 2 * h)
    return c, _with_embeddings(c, config, vocab, h, tied_default=True)


def _gpt_neox(config: dict[str, Any]) -> tuple[_Counts, int]:
    """GPT-NeoX (Pythia): fused query_key_value, dense, dense_h_to_4h, dense_4h_to_h, LayerNorms with bias."""
    s = _shape(config)
    h, L, vocab, inter = s["hidden"], s["n_layers"], s["vocab"], s["intermediate"]
    bias = bool(config.get("attention_bias", True))
    c = _Counts()
    c.linear("query_key_value", h, 3 * h, L, bias=bias)
    c.linear("dense", h, h, L, bias=bias)
    c.linear("dense_h_to_4h", h, inter, L, bias=True)
    c.linear("dense_4h_to_h", inter, h, L, bias=True)
    c.add(L * 4 * h + 2 * h)
    return c, _with_embeddings(c, config, vocab, h, tied_default=False)


def _phi(config: dict[str, Any]) -> tuple[_Counts, int]:
    """Phi (1, 1.5, 2): q, k, v and dense with bias, fc1/fc2 with bias, one LayerNorm per layer
    (attention and MLP in parallel), optional q/k LayerNorms, lm_head with bias."""
    s = _shape(config)
    h, L, heads, vocab, inter = s["hidden"], s["n_layers"], s["n_heads"], s["vocab"], s["intermediate"]
    head_dim, kv_heads = h // heads, int(config.get("num_key_value_heads") or heads)
    c = _Counts()
    c.linear("q_proj", h, heads * head_dim, L, bias=True)
    c.linear("k_proj", h, kv_heads * head_dim, L, bias=True)
    c.linear("v_proj", h, kv_heads * head_dim, L, bias=True)
    c.linear("dense", heads * head_dim, h, L, bias=True)
    c.linear("fc1", h, inter, L, bias=True)
    c.linear("fc2", inter, h, L, bias=True)
    c.add(L * 2 * h + 2 * h + (L * 4 * head_dim if config.get("qk_layernorm") else 0) + vocab)  # + lm_head's bias
    return c, _with_embeddings(c, config, vocab, h, tied_default=False)


def _bloom(config: dict[str, Any]) -> tuple[_Counts, int]:
    """BLOOM: a LayerNorm after the embeddings, fused query_key_value, dense, dense_h_to_4h,
    dense_4h_to_h, all with bias, LayerNorms with bias; lm_head tied by default."""
    s = _shape(config)
    h, L, vocab = s["hidden"], s["n_layers"], s["vocab"]
    c = _Counts()
    c.linear("query_key_value", h, 3 * h, L, bias=True)
    c.linear("dense", h, h, L, bias=True)
    c.linear("dense_h_to_4h", h, 4 * h, L, bias=True)
    c.linear("dense_4h_to_h", 4 * h, h, L, bias=True)
    c.add(2 * h + L * 4 * h + 2 * h)
    return c, _with_embeddings(c, config, vocab, h, tied_default=True)


def _any_decoder(config: dict[str, Any]) -> tuple[_Counts, int]:
    """A model type without its own arithmetic: a Llama-style decoder, its MLP gated when the
    activation is SiLU (an estimate)."""
    activation = config.get("hidden_act", config.get("activation_function", "silu"))
    return _decoder(config, gated=activation in ("silu", "swiglu", "swish"))


def _with_embeddings(c: _Counts, config: dict[str, Any], vocab: int, hidden: int, *, tied_default: bool) -> int:
    """Add the input embeddings and the lm_head (a linear layer even when tied); the embedding params."""
    tied = bool(config.get("tie_word_embeddings", tied_default))
    c.linears[("lm_head", hidden, vocab)] += 1
    c.add(vocab * hidden * (1 if tied else 2))
    return vocab * hidden * (1 if tied else 2)


Family = Callable[[dict[str, Any]], tuple[_Counts, int]]

# model_type -> arithmetic; each checked against the meta-device model (tests/test_param_count.py).
FAMILIES: dict[str, Family] = {
    "llama": _decoder,
    "mistral": _decoder,
    "qwen2": lambda config: _decoder(config, qkv_bias=True),
    "qwen3": lambda config: _decoder(config, head_dim_default=128, qk_norm=True),
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
    "phi": _phi,
    "bloom": _bloom,
}


def size_from_config(config: dict[str, Any]) -> ModelSize:
    """ModelSize of the architecture `config` describes. The families in FAMILIES are exact; any
    other model type is sized as a Llama-style decoder (an estimate: where the weights exist, the
    parameter count of their safetensors headers replaces it; `spotshift estimate --meta-check`
    builds the model on the meta device)."""
    counts, embedding_params = FAMILIES.get(config.get("model_type") or "", _any_decoder)(config)
    linears = tuple(LinearGroup(name=n, in_features=i, out_features=o, count=k)
                    for (n, i, o), k in counts.linears.items())
    return model_size_of(config, counts.params, embedding_params, linears)


def model_size_of(config: dict[str, Any], params: int, embedding_params: int,
                  linears: tuple[LinearGroup, ...]) -> ModelSize:
    """ModelSize from counted parameters and linear layers plus the config's shape fields (the one
    constructor the arithmetic and the meta-device count share)."""
    s = _shape(config)
    gate_width = sum(g.out_features * g.count for g in linears
                     if g.in_features == s["hidden"] and g.out_features in (s["intermediate"], 2 * s["intermediate"]))
    return ModelSize(params=params, embedding_params=embedding_params, model_type=config.get("model_type"),
                     n_layers=s["n_layers"], hidden=s["hidden"], n_heads=s["n_heads"], n_kv_heads=s["n_kv_heads"],
                     intermediate=s["intermediate"], vocab=s["vocab"],
                     gated_mlp=gate_width >= 2 * s["intermediate"] * s["n_layers"],
                     linears=tuple(sorted(linears, key=lambda g: (g.name, g.in_features, g.out_features))))


def _shape(config: dict[str, Any]) -> dict[str, int]:
    found = shape_of(config)
    missing = [f for f in _REQUIRED if not found[f]]
    if missing:
        raise ModelMetadataUnavailable(f"config.json has no {missing[0]} ({' / '.join(CONFIG_ALIASES[missing[0]])})")
    kv = config.get("num_key_value_heads") or config.get("n_head_kv") or found["n_heads"]
    return {**found, "n_kv_heads": int(kv), "intermediate": found["intermediate"] or 4 * found["hidden"]}
