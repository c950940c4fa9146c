"""The safetensors format's header, read without the weights: an 8-byte little-endian length, then
a JSON map of tensor name -> {dtype, shape, data_offsets}; a sharded model's index names its files."""

from __future__ import annotations

import json
import math
import struct
from collections import Counter
from collections.abc import Mapping
from typing import Any

from spotshift.sizing.model import ModelMetadataUnavailable

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the format's own cap on the JSON header

# Bytes per element of the safetensors dtypes (the keys of the Hub's safetensors parameter counts too).
DTYPE_BYTES: dict[str, float] = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1, "F4": 0.5,
}

# Buffers older checkpoints stored beside the weights (GPT-2's and GPT-NeoX's causal masks, Llama's
# rotary frequencies); transformers ignores them on load, so they are no parameters.
_BUFFER_SUFFIXES = (("attn", "bias"), ("attn", "masked_bias"), ("attention", "bias"), ("attention", "masked_bias"))
_BUFFER_NAMES = frozenset({"inv_freq"})


class NotSafetensors(ModelMetadataUnavailable):
    """Bytes that are no safetensors header (too short, too long, not JSON)."""


def header_length(first_bytes: bytes, name: str) -> int:
    """The JSON header's length from a file's first 8 bytes."""
    if len(first_bytes) < 8:
        raise NotSafetensors(f"{name}: {len(first_bytes)} bytes, too short for a safetensors header")
    (length,) = struct.unpack("<Q", first_bytes[:8])
    if length < 2:
        raise NotSafetensors(f"{name}: a safetensors header of {length} bytes cannot hold its JSON")
    if length > MAX_HEADER_BYTES:
        raise NotSafetensors(f"{name}: a safetensors header of {length} bytes is larger than the format allows "
                             f"({MAX_HEADER_BYTES})")
    return length


def parse_header(header_bytes: bytes, name: str) -> dict[str, Any]:
    """The JSON header (tensor name -> {dtype, shape, data_offsets}, plus `__metadata__`)."""
    try:
        header = json.loads(header_bytes)
    except ValueError as exc:
        raise NotSafetensors(f"{name}: the safetensors header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise NotSafetensors(f"{name}: the safetensors header is not a JSON object")
    return header


def is_parameter(tensor_name: str) -> bool:
    """False for the buffers older checkpoints stored beside the weights (causal masks, rotary frequencies)."""
    parts = tuple(tensor_name.split("."))
    return parts[-2:] not in _BUFFER_SUFFIXES and parts[-1] not in _BUFFER_NAMES


def params_by_dtype(tensors: Mapping[str, Any]) -> Counter:
    """Parameter count per dtype of one header's tensors (name -> {dtype, shape}), stored buffers left out."""
    counts: Counter = Counter()
    for name, tensor in tensors.items():
        if name != "__metadata__" and is_parameter(name):
            counts[tensor["dtype"]] += math.prod(tensor["shape"])
    return counts


def shard_files(index: Mapping[str, Any], name: str = INDEX_FILE) -> list[str]:
    """The files a sharded model's index names (its weight_map's values), each once, sorted."""
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise NotSafetensors(f"{name}: no weight_map naming the shard files")
    return sorted(set(weight_map.values()))


def weight_bytes(counts: Mapping[str, int]) -> int:
    """Bytes of the stored weights, from the parameter count per dtype."""
    unknown = sorted(set(counts) - set(DTYPE_BYTES))
    if unknown:
        raise NotSafetensors(f"unknown safetensors dtype {unknown[0]!r}. Choose between {', '.join(DTYPE_BYTES)}")
    return int(sum(n * DTYPE_BYTES[d] for d, n in counts.items()))

