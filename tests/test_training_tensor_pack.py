"""training.tensor_pack and the snapshot pieces of training.checkpoint: packed buffers are valid
safetensors files, optimizer state survives the split into skeleton + tensors exactly."""

from __future__ import annotations

import io

import pytest
import torch
from safetensors.torch import load

from training.checkpoint import (
    OPTIMIZER_FILE, OPTIMIZER_TENSORS_FILE, WEIGHTS_FILE, SnapshotTaker, join_optimizer_state,
    split_optimizer_state, training_state_from_files, weights_to_save,
)
from training.tensor_pack import host_buffer, pack, plan_layout, views


def mixed_tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "flag": torch.tensor([True, False, True]),
        "weight": torch.randn(5, 3, generator=generator),
        "half": torch.randn(7, generator=generator).to(torch.bfloat16),
        "count": torch.tensor(41, dtype=torch.int64),
        "transposed": torch.randn(3, 4, generator=generator).t(),  # not contiguous
        "empty": torch.empty(0, 2),
    }


def test_packed_buffer_is_a_safetensors_file_that_the_library_reads_back():
    tensors = mixed_tensors()
    layout = plan_layout(tensors, {"format": "pt"})
    data = bytes(pack(tensors, layout, bytearray(layout.size + 100)))  # a reused, larger buffer
    assert len(data) == layout.size
    loaded = load(data)
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name


def test_tensor_backed_host_buffer_holds_the_same_file_as_a_bytearray():
    # the layout of a pinned host buffer (a numpy view of a uint8 tensor), made here without CUDA
    tensors = mixed_tensors()
    layout = plan_layout(tensors, {"format": "pt"})
    tensor_backed = torch.full((layout.size + 64,), 7, dtype=torch.uint8).numpy()
    packed = pack(tensors, layout, tensor_backed)
    assert bytes(packed) == bytes(pack(tensors, layout, bytearray(layout.size)))
    restored, _ = views(tensor_backed)
    assert all(torch.equal(restored[name], tensor) for name, tensor in tensors.items())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without CUDA")
def test_pinned_host_buffer_falls_back_to_a_bytearray_without_cuda():
    buffer = host_buffer(1000, pinned=True)
    assert isinstance(buffer, bytearray) and len(buffer) == 1000


def test_views_read_tensors_in_place_and_writes_go_to_the_buffer():
    tensors = mixed_tensors()
    layout = plan_layout(tensors, {"format": "pt"})
    buffer = bytearray(layout.size)
    pack(tensors, layout, buffer)
    restored, metadata = views(buffer)
    assert metadata == {"format": "pt"}
    for name, tensor in tensors.items():
        assert torch.equal(restored[name], tensor), name
    restored["weight"].zero_()
    assert torch.equal(load(bytes(buffer))["weight"], torch.zeros(5, 3))


def test_unsupported_dtype_is_rejected_naming_the_choices():
    with pytest.raises(ValueError, match=r"complex64.*torch.float32"):
        plan_layout({"z": torch.zeros(2, dtype=torch.complex64)})


def test_too_small_buffer_is_rejected():
    tensors = {"w": torch.ones(4)}
    with pytest.raises(ValueError, match="smaller than the layout"):
        pack(tensors, plan_layout(tensors), bytearray(8))


def adamw_after_steps(model: torch.nn.Module, steps: int) -> torch.optim.AdamW:
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, betas=(0.8, 0.95))
    for _ in range(steps):
        model(torch.ones(2, 4)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    return optimizer


def test_optimizer_state_round_trips_through_skeleton_and_tensors_exactly():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = adamw_after_steps(model, 3)
    skeleton, tensors = split_optimizer_state(optimizer.state_dict())
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())
    saved = torch.load(io.BytesIO(_torch_bytes(skeleton)), weights_only=True)
    layout = plan_layout(tensors)
    buffer = bytearray(layout.size)
    pack(tensors, layout, buffer)

    twin = torch.nn.Linear(4, 3)
    twin.load_state_dict(model.state_dict())
    twin_optimizer = torch.optim.AdamW(twin.parameters(), lr=0.5)
    twin_optimizer.load_state_dict(join_optimizer_state(saved, views(buffer)[0]))
    for net, opt in ((model, optimizer), (twin, twin_optimizer)):
        net(torch.ones(2, 4)).sum().backward()
        opt.step()
    assert twin_optimizer.param_groups[0]["betas"][1] == 0.95
    assert torch.equal(twin.weight, model.weight) and torch.equal(twin.bias, model.bias)


def _torch_bytes(obj) -> bytes:
    out = io.BytesIO()
    torch.save(obj, out)
    return out.getvalue()


def test_snapshot_is_a_copy_and_its_buffers_are_reused_after_release():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = adamw_after_steps(model, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    taker = SnapshotTaker({"config.json": b"{}"})
    first = taker.take(1, model, optimizer, scheduler, {"step": 1})
    at_snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)  # training goes on: the snapshot must not change
    assert torch.equal(load(bytes(first.files[WEIGHTS_FILE]))["weight"], at_snapshot["weight"])
    assert first.files["config.json"] == b"{}"
    buffers = list(first.buffers)
    taker.release(first)

    second = taker.take(2, model, optimizer, scheduler, {"step": 2})
    assert {id(b) for b in second.buffers} == {id(b) for b in buffers}
    assert torch.equal(load(bytes(second.files[WEIGHTS_FILE]))["weight"], model.weight.detach())
    fresh = torch.optim.AdamW(torch.nn.Linear(4, 3).parameters())
    state = training_state_from_files(
        {k: second.files[k] for k in (OPTIMIZER_FILE, OPTIMIZER_TENSORS_FILE, "scheduler.pt", "rng.pt", "trainer_state.json")},
        fresh, torch.optim.lr_scheduler.LambdaLR(fresh, lambda s: 1.0))
    assert state["step"] == 2
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])


def test_tied_weights_are_stored_once_under_the_name_save_pretrained_uses(tiny_lm):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_lm[0])
    names = set(weights_to_save(model))
    assert "lm_head.weight" not in names and "transformer.wte.weight" in names
    assert names == set(load((tiny_lm[0] / "model.safetensors").read_bytes()))


def test_reserved_buffers_serve_the_first_snapshot_of_an_adamw_run():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=16))
    taker = SnapshotTaker({"config.json": b"{}"})
    taker.reserve(model)  # before the optimizer has any state, as at start-up
    reserved = {id(b) for b in taker._free}
    optimizer = torch.optim.AdamW(model.parameters())
    ids = torch.ones(1, 8, dtype=torch.long)
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    first = taker.take(1, model, optimizer, scheduler, {"step": 1})
    assert {id(b) for b in first.buffers} == reserved  # no allocation on the training thread
    assert torch.equal(load(bytes(first.files[WEIGHTS_FILE]))["transformer.wte.weight"], model.transformer.wte.weight)
