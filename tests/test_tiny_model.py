"""training.tiny_model: a locally built causal LM that transformers loads and trains, no Hub."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_demo_dataset_is_deterministic(tmp_path):
    from training.tiny_model import write_demo_dataset

    a = write_demo_dataset(tmp_path / "a.jsonl", lines=20, seed=1).read_text()
    assert a == write_demo_dataset(tmp_path / "b.jsonl", lines=20, seed=1).read_text()
    assert a != write_demo_dataset(tmp_path / "c.jsonl", lines=20, seed=2).read_text()
    assert len(write_demo_dataset(tmp_path / "d.txt", lines=20).read_text().splitlines()) == 20


def test_tiny_model_loads_tokenizes_and_learns(tiny_lm):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, dataset = tiny_lm
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.n_layer == 2 and model.config.n_embd == 32
    text = "spot price zone checkpoint"
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert tokenizer.decode(ids[0]) == text
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_cli_builds_a_model_and_writes_a_missing_dataset(tmp_path):
    out, dataset = tmp_path / "model", tmp_path / "corpus.txt"
    run = subprocess.run([sys.executable, "-m", "training.tiny_model", "--out", str(out), "--dataset", str(dataset),
                          "--layers", "1", "--hidden", "16", "--vocab-size", "300"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert dataset.is_file()
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}


def test_bad_shape_names_the_fields(tmp_path):
    from training.tiny_model import build_tiny_model, write_demo_dataset

    with pytest.raises(ValueError, match="layers"):
        build_tiny_model(tmp_path / "m", write_demo_dataset(tmp_path / "d.txt", lines=5), layers=0)
