"""What sizing knows about a model (parameters by role, shape) and about a job's training mode."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from spotshift.models import JobCreate, Precision, TrainingMethod

# Modules LoRA adapts when a job names none: PEFT's defaults (the trainer's, training.adapters) for the
# causal LMs whose defaults are not q_proj and v_proj, copied so that sizing never imports PEFT (and
# with it torch); tests/test_param_count.py holds the copy to PEFT's table.
DEFAULT_LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "gpt2": ("c_attn",), "gpt_bigcode": ("c_attn",), "gpt_neox": ("query_key_value",), "bloom": ("query_key_value",),
    "falcon": ("query_key_value",), "RefinedWeb": ("query_key_value",), "RefinedWebModel": ("query_key_value",),
    "chatglm": ("query_key_value",), "mpt": ("Wqkv",), "codegen": ("qkv_proj",), "btlm": ("c_proj", "c_attn"),
    "phi": ("q_proj", "v_proj", "fc1", "fc2"), "nemotron_h": ("q_proj", "k_proj", "v_proj", "o_proj"),
}
FALLBACK_LORA_TARGETS = ("q_proj", "v_proj")


class ModelMetadataUnavailable(ValueError):
    """The reference points at something without the metadata sizing needs (no config, no shape)."""


class LinearGroup(BaseModel):
    """Every linear layer of one name and shape inside the model (e.g. all 32 `q_proj`)."""

    model_config = ConfigDict(frozen=True)

    name: str
    in_features: int = Field(ge=1)
    out_features: int = Field(ge=1)
    count: int = Field(ge=1)


class ModelSize(BaseModel):
    """Parameter counts and shape of a causal LM, from its config.json and the headers of its
    weights (spotshift.sizing.architecture, spotshift.sizing.safetensors); no weights loaded."""

    model_config = ConfigDict(frozen=True)

    params: int = Field(ge=1)
    embedding_params: int = Field(ge=0, description="input embeddings plus an untied output head")
    model_type: str | None = None
    n_layers: int = Field(ge=1)
    hidden: int = Field(ge=1)
    n_heads: int = Field(ge=1)
    n_kv_heads: int = Field(ge=1)
    intermediate: int = Field(ge=1)
    vocab: int = Field(ge=1)
    gated_mlp: bool = Field(description="SwiGLU-style MLP (gate, up, down) rather than two matrices")
    linears: tuple[LinearGroup, ...] = Field(default=(), description="linear layers by module name and shape")
    params_from: Literal["config", "safetensors", "meta-device"] = Field(
        default="config", description="where `params` comes from: config arithmetic, the weights' safetensors "
        "headers, or a model built on the meta device")

    @property
    def layer_linear_params(self) -> int:
        """Weights of the linear layers inside the blocks (what QLoRA stores in 4 bits)."""
        return sum(g.in_features * g.out_features * g.count for g in self.linears
                   if g.count % self.n_layers == 0 and g.out_features != self.vocab)

    def lora_targets(self, target_modules: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
        """The module names LoRA adapts: the job's, else the default for the model type."""
        if target_modules:
            return tuple(target_modules)
        return DEFAULT_LORA_TARGETS.get(self.model_type or "", FALLBACK_LORA_TARGETS)

    def lora_params(self, r: int, target_modules: list[str] | tuple[str, ...] | None) -> int:
        """Trainable parameters of rank-`r` adapters: r x (in + out) per adapted linear layer."""
        targets = self.lora_targets(target_modules)
        names = sorted({g.name for g in self.linears})
        missing = [t for t in targets if t not in names]
        if missing:
            raise ValueError(f"lora.target_modules: {missing[0]!r} is not a linear layer of this model. "
                             f"Choose between {', '.join(names)}")
        return sum(r * (g.in_features + g.out_features) * g.count for g in self.linears if g.name in targets)


class TrainingShape(BaseModel):
    """How a job trains: the inputs of the memory and speed model that come from its JobCreate."""

    model_config = ConfigDict(frozen=True)

    method: TrainingMethod = TrainingMethod.FULL
    precision: Precision = Precision.AUTO
    micro_batch: int = Field(default=1, ge=1)
    seq_len: int = Field(default=128, ge=1)
    samples_per_step: int = Field(default=1, ge=1, description="batch_size x grad_accum: the global batch")
    gradient_checkpointing: bool = False
    lora_r: int = Field(default=16, ge=1)
    lora_targets: tuple[str, ...] | None = None
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)

    @classmethod
    def of_job(cls, job: JobCreate) -> TrainingShape:
        lora = job.lora_options
        return cls(method=job.method, precision=job.precision, micro_batch=job.batch_size, seq_len=job.seq_len,
                   samples_per_step=job.batch_size * job.grad_accum, gradient_checkpointing=job.gradient_checkpointing,
                   lora_r=lora.r if lora else 16, lora_dropout=lora.dropout if lora else 0.05,
                   lora_targets=tuple(lora.target_modules) if lora and lora.target_modules else None)

    @property
    def adapters(self) -> bool:
        return self.method is not TrainingMethod.FULL


class JobSizing(BaseModel):
    """A model and how a job trains it: everything the optimizer needs to size and price it."""

    model_config = ConfigDict(frozen=True)

    model: ModelSize
    shape: TrainingShape

    @classmethod
    def of_job(cls, job: JobCreate, model: ModelSize) -> JobSizing:
        """The sizing of `job` training `model` (its size from spotshift.hf.model_size)."""
        return cls(model=model, shape=TrainingShape.of_job(job))

    @property
    def tokens_per_step(self) -> int:
        return self.shape.samples_per_step * self.shape.seq_len

    @property
    def trainable_params(self) -> int:
        if self.shape.adapters:
            return self.model.lora_params(self.shape.lora_r, self.shape.lora_targets)
        return self.model.params
