"""How the trained model is built for each method: the full model in fp32 (master weights), or a
frozen base (fp32/bf16/fp16, or 4-bit NF4 for qlora) with LoRA adapters, gradient checkpointing on
request; and which tensors a checkpoint holds (the full weights, or the adapter only)."""

from __future__ import annotations

import json
import logging

import torch

from training.precision import DTYPES

log = logging.getLogger("training.adapters")

WEIGHTS_FILE = "model.safetensors"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"  # PEFT's layout
ADAPTER_CONFIG_FILE = "adapter_config.json"


def default_target_modules(model_type: str) -> list[str]:
    """PEFT's default LoRA targets for the model type (GPT-2: c_attn; Llama, Mistral: q_proj, v_proj)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    if model_type not in DEFAULTS:
        raise ValueError(f"no default LoRA target modules for model type {model_type!r}: set lora.target_modules "
                         "(e.g. the names of the attention projections)")
    return list(DEFAULTS[model_type])


def require_qlora_support(device: str) -> None:
    """QLoRA needs bitsandbytes and a CUDA GPU: fail before loading anything otherwise."""
    if not device.startswith("cuda"):
        raise RuntimeError("method qlora needs a CUDA GPU (bitsandbytes 4-bit); this machine has none. "
                           "Choose between full, lora for method here")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("method qlora needs the bitsandbytes package (pip install bitsandbytes)") from exc


def _quantization_config(precision: str):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=DTYPES["bf16" if precision == "fp32" else precision])


def load_model(spec, model_dir: str, device: str, precision: str):
    """The model to train, on `device`: trainable weights are fp32 in every mode."""
    from transformers import AutoModelForCausalLM

    if spec.method == "full":
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
    elif spec.method == "lora":
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=DTYPES[precision]).to(device)
    else:
        require_qlora_support(device)
        from peft import prepare_model_for_kbit_training

        model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=_quantization_config(precision),
                                                     device_map={"": device})
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec.gradient_checkpointing)
    if spec.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x's name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if spec.method != "full":
        model = add_lora(model, spec)
    return model


def add_lora(model, spec):
    """LoRA adapters on the frozen model; the adapter's weights in fp32."""
    from peft import LoraConfig, get_peft_model

    settings = spec.adapter
    targets = settings.target_modules or default_target_modules(model.config.model_type)
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=targets, task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("LoRA r=%d alpha=%d on %s: %d trainable parameters", settings.r, settings.alpha, targets, trainable)
    return model


def is_adapter(model) -> bool:
    return hasattr(model, "peft_config")


def weights_to_save(model, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """What a checkpoint holds of the model: the adapter (PEFT's names), or the full state_dict
    (`state`: one gathered from shards) without tied duplicates (kept: the first name that is not
    a tied alias, as save_pretrained)."""
    if is_adapter(model):
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(model)
    tied = getattr(model, "_tied_weights_keys", None) or ()
    if state is not None:  # gathered copies: a tied alias no longer shares its source's memory
        sources = tied if isinstance(tied, dict) else {}
        return {name: t for name, t in state.items() if not (name in sources and sources[name] in state)}
    tied = set(tied)
    kept: dict[int, str] = {}
    state = model.state_dict()
    for name in sorted(state, key=lambda n: n in tied):
        tensor = state[name]
        kept.setdefault(tensor.data_ptr() if tensor.numel() else id(tensor), name)
    return {name: state[name] for name in kept.values()}


def weights_file(model) -> str:
    return ADAPTER_WEIGHTS_FILE if is_adapter(model) else WEIGHTS_FILE


def load_adapter_weights(model, tensors: dict[str, torch.Tensor]) -> None:
    """Put a checkpoint's adapter tensors into the (freshly built) adapted model."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, tensors)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ValueError(f"checkpoint adapter has tensors the model does not: {unexpected[:5]}")


def adapter_config_bytes(model) -> bytes:
    """adapter_config.json as PeftModel.save_pretrained writes it."""
    config = model.peft_config["default"].to_dict()
    config["target_modules"] = sorted(config["target_modules"]) if isinstance(config["target_modules"], set) \
        else config["target_modules"]
    return json.dumps(config, indent=2, sort_keys=True, default=str).encode()
