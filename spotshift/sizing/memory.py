"""Per-GPU and host memory of a training run, by component, for any method, precision and world size."""

from __future__ import annotations

from dataclasses import dataclass

from spotshift.models import TrainingMethod
from spotshift.sizing.model import JobSizing

GIB = 1024**3
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
ADAM_BYTES = 8  # two fp32 moments per trainable parameter
NF4_BYTES = 0.5 + 0.5 / 64 + 4 / (64 * 256)  # 4-bit weights, fp8 absmax per 64, fp32 per 256 absmaxes (QLoRA)
CUDA_OVERHEAD_GIB = 1.0  # CUDA context, cuBLAS workspace, allocator slack
HOST_BASELINE_GIB = 3.0  # the trainer process: Python, torch, CUDA host allocations, tokenizer, data
CHECKPOINT_BYTES_PER_TRAINABLE = 12  # fp32 weights + AdamW moments, pinned for the snapshot


@dataclass(frozen=True)
class GpuMemory:
    """Bytes one GPU holds at its peak, by component."""

    weights: float  # the model as it computes (frozen base included), this rank's share
    trainable_states: float  # fp32 master weights, gradients and AdamW moments of what trains
    activations: float
    logits: float
    overhead: float

    @property
    def total_gib(self) -> float:
        return (self.weights + self.trainable_states + self.activations + self.logits + self.overhead) / GIB


def gpu_memory(sizing: JobSizing, precision: str, *, world: int = 1, sharded: bool = False,
               micro_batch: int | None = None) -> GpuMemory:
    """Peak memory of one GPU of `world` training `sizing` in `precision` (fp32, bf16 or fp16).

    With P parameters, T of them trainable, b bytes per element of `precision`:
      full      weights P*b, states T*(b + 8 + (4 if b < 4)) (grads, AdamW, fp32 master copy);
                with FSDP (`sharded`) both / world, plus two gathered layers of P/L*b
      lora      weights P*b (frozen base), states T*16 (fp32 adapters, grads, AdamW)
      qlora     weights NF4 for the blocks' linear layers, b for the rest; states T*16
      activations  per layer and token `layer_activation_elements` * b (what autograd keeps with
                fused attention); gradient checkpointing keeps h*b per layer and token plus one
                layer's full set
      logits    micro_batch * s * V * (b + 4 + 4): the logits, their fp32 copy for the loss, its grad
    DDP (world > 1, not sharded) adds its gradient buckets: one more copy of the trainable gradients.
    """
    b = BYTES[precision]
    m, shape = sizing.model, sizing.shape
    trainable = sizing.trainable_params
    mb = micro_batch or shape.micro_batch
    tokens = mb * shape.seq_len
    if shape.method is TrainingMethod.QLORA:
        quantized = m.layer_linear_params
        weights = quantized * NF4_BYTES + (m.params - quantized) * b
    else:
        weights = m.params * b
    states = trainable * ((b + ADAM_BYTES + (4 if b < 4 else 0)) if not shape.adapters else 16)
    if sharded and world > 1:
        weights = weights / world + 2 * m.params / m.n_layers * b
        states /= world
    elif world > 1:
        states += trainable * (4 if shape.adapters else b)  # DDP's gradient buckets
    per_token_layer = layer_activation_elements(sizing)
    if shape.gradient_checkpointing:
        activations = tokens * b * (m.n_layers * m.hidden + per_token_layer)
    else:
        activations = tokens * b * m.n_layers * per_token_layer
    logits = tokens * m.vocab * (b + 8)
    return GpuMemory(weights, states, activations, logits, CUDA_OVERHEAD_GIB * GIB)


def layer_activation_elements(sizing: JobSizing) -> float:
    """Elements per token one decoder layer keeps for backward (Llama-style: RMSNorm, fused
    attention, no dropout), counted from the tensors autograd saves (torch.autograd.graph
    saved_tensors_hooks on a Llama built from a config, see tests/test_sizing.py):

      full   9h + 2h_kv + k*I   two norms (input and normalized: 4h), the q/k/v input, the o_proj
                                and MLP inputs (3h), q and the attention output in head layout
                                (2h), k and v (2h_kv); MLP: k = 4 gated (gate, SiLU, up, product),
                                2 plain
      lora   5h + 2h_kv + (k-1)*I   frozen weights keep no input (o_proj, MLP in, down_proj, the
                                norms' normalized input), plus, with adapter dropout, the dropped
                                input and its mask (1.25x the input) of each adapted layer
    """
    m, shape = sizing.model, sizing.shape
    h, kv = m.hidden, m.hidden * m.n_kv_heads // m.n_heads
    k = 4 if m.gated_mlp else 2
    if not shape.adapters:
        return 9 * h + 2 * kv + k * m.intermediate
    elements = 5 * h + 2 * kv + (k - 1) * m.intermediate
    if shape.lora_dropout > 0:
        targets = m.lora_targets(shape.lora_targets)
        elements += 1.25 * sum(g.in_features * g.count for g in m.linears if g.name in targets) / m.n_layers
    return elements


def single_gpu_memory_gib(sizing: JobSizing) -> float:
    """GiB the job needs on one GPU, unsharded, in its precision (auto counts as bf16: fp16 takes
    the same bytes, and only a CPU would run fp32)."""
    precision = sizing.shape.precision.value
    return gpu_memory(sizing, "bf16" if precision == "auto" else precision).total_gib


def host_memory_gib(sizing: JobSizing, *, resuming: bool = True) -> float:
    """Host RAM the trainer needs: its baseline, the pinned checkpoint buffers (fp32 weights and
    AdamW moments of what trains: 12 bytes per trainable parameter; the adapters only for LoRA)
    and, at a resume, the downloaded checkpoint of the same size."""
    snapshot = sizing.trainable_params * CHECKPOINT_BYTES_PER_TRAINABLE
    return HOST_BASELINE_GIB + snapshot * (2 if resuming else 1) / GIB
