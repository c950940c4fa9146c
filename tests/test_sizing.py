"""The one memory and speed model (spotshift.sizing): per-GPU memory for every method, precision and
world size, host memory, the GPUs a job uses, and its rate of work on each instance type."""

from __future__ import annotations

import pytest

from spotshift.catalog import GPU_MODELS, INSTANCE_TYPES
from spotshift.hf import size_from_formula
from spotshift.sizing import JobSizing, TrainingShape, fit, fits, gpu_memory, host_memory_gib, work_rates
from spotshift.sizing.fit import trainer_shards
from spotshift.sizing.memory import GIB
from spotshift.sizing.speed import flops_per_token, scaling_efficiency, work_units_per_hour

LLAMA3_8B = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256,
             "tie_word_embeddings": False, "hidden_act": "silu"}
TINYLLAMA_1B = {"model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 22, "num_attention_heads": 32,
                "num_key_value_heads": 4, "intermediate_size": 5632, "vocab_size": 32000,
                "tie_word_embeddings": False, "hidden_act": "silu"}


def sizing(config: dict, **shape) -> JobSizing:
    return JobSizing(model=size_from_formula(config), shape=TrainingShape(**{"micro_batch": 1, "seq_len": 2048, **shape}))


def test_llama3_8b_full_bf16_needs_more_than_any_single_gpu_and_fits_only_where_fsdp_spreads_it():
    one = sizing(LLAMA3_8B, method="full", precision="bf16")
    need = gpu_memory(one, "bf16").total_gib
    assert need > max(g.memory_gib for g in GPU_MODELS.values() if g.name != "H200")
    # a global batch of one sample keeps one rank busy: only one 141 GB H200 holds it whole
    alone = {n: f for n, f in fits(one).items() if f.fits}
    assert set(alone) == {"p5e.48xlarge", "p5en.48xlarge"} and {f.gpus_used for f in alone.values()} == {1}
    assert fit(one, "p4d.24xlarge").reason.endswith("(FSDP over its 8 GPUs would fit: batch_size x grad_accum of at least 8)")
    spread = sizing(LLAMA3_8B, method="full", precision="bf16", samples_per_step=16)
    fitting = {n: f for n, f in fits(spread).items() if f.fits}
    assert "p4d.24xlarge" in fitting and fitting["p4d.24xlarge"].sharded and fitting["p4d.24xlarge"].gpus_used == 8
    for name, f in fitting.items():
        t = INSTANCE_TYPES[name]
        assert f.gpu_memory_per_device_gib <= t.gpu_memory_gib  # per GPU, never the instance's total
        assert f.sharded or f.gpu_memory_per_device_gib == pytest.approx(need, rel=0.01)
    refused = fit(spread, "g5.48xlarge")  # 8 x 24 GB: FSDP over 8 still needs more than 24 GB each
    assert not refused.fits and "per GPU with FSDP over 8 GPUs" in refused.reason


def test_lora_of_8b_with_gradient_checkpointing_fits_one_24gb_gpu_and_without_does_not():
    lora = sizing(LLAMA3_8B, method="lora", precision="auto", gradient_checkpointing=True)
    on_a10g = fit(lora, "g5.xlarge")
    assert on_a10g.fits and on_a10g.gpus_used == 1 and on_a10g.precision == "bf16"
    assert 16 < on_a10g.gpu_memory_per_device_gib <= 24  # the bf16 base alone is 15 GiB
    assert not fit(sizing(LLAMA3_8B, method="lora", precision="auto"), "g5.xlarge").fits  # activations of 2048 tokens


def test_qlora_stores_the_blocks_in_4_bits_and_lora_trains_megabytes():
    full = sizing(LLAMA3_8B, method="full", precision="bf16")
    lora = sizing(LLAMA3_8B, method="lora", precision="bf16")
    qlora = sizing(LLAMA3_8B, method="qlora", precision="bf16")
    assert lora.trainable_params == 16 * (4096 + 4096) * 32 + 16 * (4096 + 1024) * 32  # q_proj and v_proj, r=16
    assert gpu_memory(lora, "bf16").trainable_states == 16 * lora.trainable_params
    assert gpu_memory(full, "bf16").weights == gpu_memory(lora, "bf16").weights == 2 * full.model.params
    quantized = gpu_memory(qlora, "bf16").weights
    assert quantized == pytest.approx(full.model.layer_linear_params * 0.508 + 2 * full.model.embedding_params, rel=0.01)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_full_fine_tune_model_states_are_16_bytes_per_parameter(precision):
    """ZeRO (Rajbhandari et al. 2020): weights, gradients, AdamW moments and (mixed precision) fp32 master."""
    s = sizing(TINYLLAMA_1B, method="full", precision=precision)
    m = gpu_memory(s, precision)
    assert m.weights + m.trainable_states == 16 * s.model.params


def test_fsdp_divides_model_states_and_ddp_adds_gradient_buckets():
    s = sizing(TINYLLAMA_1B, method="full", precision="bf16", samples_per_step=8)
    one, ddp, fsdp = gpu_memory(s, "bf16"), gpu_memory(s, "bf16", world=4), gpu_memory(s, "bf16", world=4, sharded=True)
    assert ddp.trainable_states == one.trainable_states + 2 * s.model.params
    assert fsdp.trainable_states == pytest.approx(one.trainable_states / 4)
    assert fsdp.weights == pytest.approx(one.weights / 4 + 2 * one.weights / 22)  # plus two gathered layers
    assert fsdp.activations == one.activations


def test_activations_scale_with_tokens_and_gradient_checkpointing_keeps_one_input_per_layer():
    base = gpu_memory(sizing(TINYLLAMA_1B, micro_batch=2), "bf16")
    assert gpu_memory(sizing(TINYLLAMA_1B, micro_batch=4), "bf16").activations == pytest.approx(2 * base.activations)
    ckpt = gpu_memory(sizing(TINYLLAMA_1B, micro_batch=2, gradient_checkpointing=True), "bf16")
    assert ckpt.activations < base.activations / 5 and ckpt.weights == base.weights


def test_host_memory_refuses_a_1b_full_fine_tune_on_a_16gb_instance():
    s = sizing(TINYLLAMA_1B, method="full", precision="bf16", seq_len=512)
    assert host_memory_gib(s) == pytest.approx(3 + 24 * s.model.params / GIB)  # pinned snapshot + resume download
    small, big = fit(s, "g5.xlarge"), fit(s, "g5.4xlarge")  # same A10G; 16 vs 64 GiB of RAM
    assert not small.fits and "host memory" in small.reason and small.work_units_per_hour == 0
    assert big.fits and big.host_memory_gib < INSTANCE_TYPES["g5.4xlarge"].memory_gib
    lora = sizing(TINYLLAMA_1B, method="lora", precision="bf16", seq_len=512)
    assert fit(lora, "g5.xlarge").fits and host_memory_gib(lora) < 3.1  # adapters only


def test_auto_precision_follows_the_gpu_and_bf16_is_refused_where_there_is_none():
    s = sizing(TINYLLAMA_1B, method="lora", seq_len=256)
    assert fit(s, "p3.2xlarge").precision == "fp16" and fit(s, "g5.xlarge").precision == "bf16"
    bf16 = fit(sizing(TINYLLAMA_1B, method="lora", precision="bf16", seq_len=256), "g4dn.xlarge")
    assert not bf16.fits and "T4 has no bf16" in bf16.reason


def test_a_job_uses_only_as_many_gpus_as_its_global_batch_and_scaling_is_sublinear():
    two = sizing(TINYLLAMA_1B, method="lora", precision="bf16", seq_len=256, samples_per_step=2)
    on_8 = fit(two, "g5.48xlarge")
    assert on_8.gpus_used == 2
    assert on_8.work_units_per_hour == pytest.approx(work_units_per_hour("g5.48xlarge", "bf16", 2))
    one_gpu = work_units_per_hour("p4d.24xlarge", "bf16", 1)
    eight = work_units_per_hour("p4d.24xlarge", "bf16", 8)
    assert 7 * one_gpu < eight < 8 * one_gpu and scaling_efficiency("g5.48xlarge", 8) < scaling_efficiency("p4d.24xlarge", 8)
    assert work_units_per_hour("p4d.24xlarge", "fp32", 1) < one_gpu / 5  # CUDA-core fp32 vs tensor-core bf16
    assert work_rates(two)["g5.48xlarge"] == on_8.work_units_per_hour and "g4dn.xlarge" not in work_rates(two)
    auto = work_rates(sizing(TINYLLAMA_1B, method="lora", seq_len=256))
    assert auto["g4dn.xlarge"] == pytest.approx(work_units_per_hour("g4dn.xlarge", "fp16", 1))  # fp16 on the T4


def test_flops_per_token_by_method():
    p = size_from_formula(TINYLLAMA_1B).params
    full, lora = sizing(TINYLLAMA_1B, method="full"), sizing(TINYLLAMA_1B, method="lora")
    assert flops_per_token(full) == 6 * p
    assert flops_per_token(lora) == 4 * p + 6 * lora.trainable_params
    assert flops_per_token(sizing(TINYLLAMA_1B, method="full", gradient_checkpointing=True)) == 8 * p


def test_sharding_follows_the_trainers_rule_and_a_ddp_run_that_would_not_fit_is_refused():
    """training.distributed.choose_sharding (auto) shards a full fine-tune only when its 16 bytes
    per parameter exceed 80% of a GPU: where it would not, activations that overflow mean no fit."""
    long_batch = sizing(TINYLLAMA_1B, method="full", precision="bf16", micro_batch=8, seq_len=4096, samples_per_step=32)
    assert not trainer_shards(long_batch, 4, 48)
    refused = fit(long_batch, "g6e.12xlarge")
    assert not refused.fits and not refused.sharded and "with 4 GPU(s)" in refused.reason
    assert trainer_shards(sizing(LLAMA3_8B, method="full"), 8, 40) and not trainer_shards(sizing(LLAMA3_8B, method="lora"), 8, 40)


@pytest.mark.parametrize("method, dropout", [("full", 0.0), ("lora", 0.05), ("lora", 0.0)])
def test_activations_match_what_autograd_saves_for_a_real_llama(method, dropout):
    """The activation formula against the bytes autograd keeps for backward (saved_tensors_hooks) in a
    Llama built from a config on CPU (fp32): within 6%, logits included (LoRA without dropout: +5.4%)."""
    torch = pytest.importorskip("torch", reason="the train extra builds the model")
    transformers = pytest.importorskip("transformers", reason="the train extra builds the model")
    from peft import LoraConfig, get_peft_model

    from spotshift.hf import size_from_config

    config = {"model_type": "llama", "vocab_size": 512, "hidden_size": 256, "intermediate_size": 704,
              "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 1, "tie_word_embeddings": False}
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{k: v for k, v in config.items() if k != "model_type"}))
    if method == "lora":
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=dropout,
                                                 target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.train()
    saved: dict = {}

    def keep(t):
        saved[(t.data_ptr(), tuple(t.shape), t.dtype)] = t.numel() * t.element_size()
        return t

    batch = torch.randint(0, 512, (2, 128))
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        model(input_ids=batch, labels=batch)
    weights = {p.data_ptr() for p in model.parameters()}
    measured = sum(v for (ptr, _, _), v in saved.items() if ptr not in weights)
    shape = TrainingShape(method=method, precision="fp32", micro_batch=2, seq_len=128, lora_dropout=dropout)
    predicted = gpu_memory(JobSizing(model=size_from_config(config), shape=shape), "fp32")
    assert predicted.activations + predicted.logits == pytest.approx(measured, rel=0.06)
