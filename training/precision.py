"""Numeric precision of a run: which one `auto` means on this machine, the autocast context of the
forward pass, and the loss scaler fp16 needs. Weights stay fp32 (the master copy) in every mode."""

from __future__ import annotations

import contextlib

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_precision(requested: str, device: str) -> str:
    """auto: bf16 on a GPU that has it, fp16 (with loss scaling) on one that does not (V100, T4),
    fp32 on CPU. An explicit choice is kept."""
    if requested != "auto":
        return requested
    if not device.startswith("cuda"):
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


def autocast(precision: str, device: str):
    """The forward pass's autocast context (none for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=DTYPES[precision])


def make_scaler(precision: str, device: str):
    """A GradScaler for fp16 (its state is checkpointed), None otherwise."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler("cuda" if device.startswith("cuda") else "cpu")
