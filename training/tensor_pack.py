"""Tensors <-> safetensors bytes without intermediate copies: pack copies each tensor once into a
(reusable) buffer laid out as a .safetensors file; views reads tensors back as views of a buffer.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import torch

_DTYPE_CODES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
_DTYPES = {code: dtype for dtype, code in _DTYPE_CODES.items()}
_ALIGN = 8


@dataclass(frozen=True)
class PackLayout:
    """Where each tensor goes in a safetensors file: header bytes, then the tensors' raw bytes."""

    header: bytes
    offsets: dict[str, tuple[int, int]]  # name -> (start, end), absolute in the file
    size: int


def dtype_code(dtype: torch.dtype) -> str:
    try:
        return _DTYPE_CODES[dtype]
    except KeyError:
        raise ValueError(f"dtype {dtype} cannot be checkpointed; choose from {', '.join(map(str, _DTYPE_CODES))}") from None


def plan_layout(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> PackLayout:
    """The safetensors header for `tensors` and each tensor's byte range (widest dtypes first, then
    by name, so that every tensor starts aligned to its element size)."""
    entries: dict[str, dict] = {"__metadata__": dict(metadata or {})}
    position = 0
    for name in sorted(tensors, key=lambda n: (-tensors[n].element_size(), n)):
        tensor = tensors[name]
        nbytes = tensor.numel() * tensor.element_size()
        entries[name] = {"dtype": dtype_code(tensor.dtype), "shape": list(tensor.shape),
                         "data_offsets": [position, position + nbytes]}
        position += nbytes
    header = json.dumps(entries, separators=(",", ":")).encode()
    header += b" " * (-len(header) % _ALIGN)
    start = 8 + len(header)
    offsets = {name: (start + e["data_offsets"][0], start + e["data_offsets"][1])
               for name, e in entries.items() if name != "__metadata__"}
    return PackLayout(struct.pack("<Q", len(header)) + header, offsets, start + position)


def host_buffer(size: int, pinned: bool = False):
    """A writable host buffer of `size` bytes: page-locked when `pinned` (GPU -> host copies into it
    run asynchronously at full PCIe/NVLink speed), a plain bytearray otherwise or when pinning fails."""
    if pinned:
        try:
            return torch.empty(size, dtype=torch.uint8, pin_memory=True).numpy()
        except RuntimeError:  # no CUDA driver, or page-locked memory exhausted
            pass
    return bytearray(size)


def pack(tensors: dict[str, torch.Tensor], layout: PackLayout, buffer) -> memoryview:
    """Copy `tensors` (any device) into `buffer` (a bytearray or host_buffer) as a safetensors file;
    returns the file's bytes. GPU tensors are copied asynchronously and waited for once at the end."""
    if len(buffer) < layout.size:
        raise ValueError(f"buffer of {len(buffer)} bytes is smaller than the layout ({layout.size} bytes)")
    view = memoryview(buffer).cast("B")[:layout.size]
    view[:len(layout.header)] = layout.header
    on_gpu = False
    for name, (start, end) in layout.offsets.items():
        if end > start:
            source = tensors[name].detach()
            on_gpu = on_gpu or source.is_cuda
            target = torch.frombuffer(buffer, dtype=torch.uint8, count=end - start, offset=start)
            target.copy_(source.contiguous().reshape(-1).view(torch.uint8), non_blocking=source.is_cuda)
    if on_gpu:
        torch.cuda.synchronize()
    return view


def views(data) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors of a safetensors file held in a writable buffer, as views into it (no copy), and
    its metadata. The tensors keep the buffer alive."""
    view = memoryview(data)
    (header_len,) = struct.unpack("<Q", view[:8])
    entries = json.loads(bytes(view[8:8 + header_len]))
    metadata = entries.pop("__metadata__", None) or {}
    start = 8 + header_len
    tensors = {}
    for name, entry in entries.items():
        begin, end = entry["data_offsets"]
        dtype = _DTYPES[entry["dtype"]]
        count = (end - begin) // torch.empty((), dtype=dtype).element_size()
        flat = (torch.frombuffer(data, dtype=dtype, count=count, offset=start + begin) if count
                else torch.empty(0, dtype=dtype))
        tensors[name] = flat.reshape(entry["shape"])
    return tensors, metadata
