"""The memory model against measurement: peak RSS of the real trainer (`python -m training`) on CPU
next to spotshift.sizing's prediction, for three Llama-style model sizes x methods.

    python bench/memory_model.py [--sizes 10M,50M,125M] [--methods full,lora] [--steps 4] [--json OUT]

On CPU every tensor the model puts on a GPU lives in host RAM, so the prediction is: the measured
RSS of a process that only imports the trainer's stack (torch, transformers, peft), plus the GPU
memory model's bytes (weights, trainable states, activations, logits; no CUDA overhead), plus the
host model's pinned checkpoint buffers (12 bytes per trainable parameter; no resume download).
Peak RSS is the kernel's (wait4 ru_maxrss) of each trainer process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Llama-style shapes (layers, hidden, intermediate) of about the named size with a 512-token vocabulary
SIZES = {"10M": (6, 384, 1024), "50M": (8, 768, 2048), "125M": (11, 1024, 2816)}
MIB = 1024**2
IMPORTS = "import torch, transformers, peft, datasets, boto3, training.loop, training.adapters, training.storage"


def peak_rss_mib(argv: list[str], env: dict[str, str]) -> float:
    """Run `argv` to its end; its peak resident set (the kernel's high-water mark) in MiB."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} failed ({status}):\n{err[-3000:]}")
    return usage.ru_maxrss / 1024  # KiB on Linux


def predicted_mib(model_dir: Path, method: str, batch: int, seq_len: int, baseline_mib: float) -> dict:
    from spotshift.hf import model_size
    from spotshift.sizing import JobSizing, TrainingShape, gpu_memory
    from spotshift.sizing.memory import CHECKPOINT_BYTES_PER_TRAINABLE

    sizing = JobSizing(model=model_size(str(model_dir)),
                       shape=TrainingShape(method=method, precision="fp32", micro_batch=batch, seq_len=seq_len,
                                           samples_per_step=batch))
    m = gpu_memory(sizing, "fp32")
    parts = {"weights": m.weights, "states": m.trainable_states, "activations": m.activations, "logits": m.logits,
             "snapshot": sizing.trainable_params * CHECKPOINT_BYTES_PER_TRAINABLE}
    return {"params": sizing.model.params, "trainable": sizing.trainable_params,
            "parts_mib": {k: round(v / MIB, 1) for k, v in parts.items()},
            "predicted_mib": baseline_mib + sum(parts.values()) / MIB}


def build_llama(out_dir: Path, dataset: Path, layers: int, hidden: int, intermediate: int) -> Path:
    """A Llama-style causal LM (grouped KV heads, SwiGLU, RMSNorm, no dropout) built from a config,
    with a tokenizer trained on `dataset`; saved like a Hub checkpoint. No download."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.data import parse_corpus
    from training.tiny_model import train_tokenizer

    tokenizer = train_tokenizer(parse_corpus(dataset.read_bytes(), dataset.name), 512)
    heads = hidden // 64
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 4),
                         max_position_embeddings=1024, bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def trainer_spec(root: Path, model_dir: Path, dataset: Path, method: str, args) -> Path:
    spec = {"job_id": f"mem-{method}", "model": str(model_dir), "dataset": str(dataset),
            "output": str(root / f"out-{model_dir.name}-{method}") + "/", "max_steps": args.steps,
            "batch_size": args.batch, "seq_len": args.seq_len, "checkpoint_every_steps": max(1, args.steps // 2),
            "device": "cpu", "precision": "fp32", "method": method, "metrics_every_steps": 1000,
            "heartbeat_seconds": 30, "control_poll_seconds": 30}
    path = root / f"spec-{model_dir.name}-{method}.json"
    path.write_text(json.dumps(spec))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10M,50M,125M")
    p.add_argument("--methods", default="full,lora")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    from training.tiny_model import write_demo_dataset

    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "2"}
    rows = []
    with tempfile.TemporaryDirectory(prefix="memory-model-") as tmp:
        root = Path(tmp)
        dataset = write_demo_dataset(root / "corpus.jsonl", lines=2000, seed=0)
        baseline = peak_rss_mib([sys.executable, "-c", IMPORTS], env)
        print(f"baseline (the trainer's imports: torch, transformers, peft, datasets, boto3): {baseline:.0f} MiB",
              flush=True)
        for size in args.sizes.split(","):
            model_dir = build_llama(root / size, dataset, *SIZES[size])
            for method in args.methods.split(","):
                spec = trainer_spec(root, model_dir, dataset, method, args)
                measured = peak_rss_mib([sys.executable, "-m", "training", "--spec", str(spec)], env)
                row = {"size": size, "method": method, **predicted_mib(model_dir, method, args.batch, args.seq_len,
                                                                       baseline), "measured_mib": measured}
                row["ratio"] = row["predicted_mib"] / measured
                rows.append(row)
                print(json.dumps(row), flush=True)
    print_table(rows, args, baseline)
    if args.json:
        Path(args.json).write_text(json.dumps({"baseline_mib": baseline, "rows": rows}, indent=2))
    return 0


def print_table(rows: list[dict], args, baseline: float) -> None:
    print(f"\nmemory model vs measurement (CPU, fp32, micro-batch {args.batch} x {args.seq_len} tokens, "
          f"{args.steps} steps with checkpoints; peak RSS; baseline {baseline:.0f} MiB)")
    print("| model | params | method | trained | predicted MiB | measured MiB | predicted / measured |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| Llama-style {r['size']} | {r['params'] / 1e6:.1f}M | {r['method']} | {r['trainable'] / 1e6:.2f}M | "
              f"{r['predicted_mib']:.0f} | {r['measured_mib']:.0f} | {r['ratio']:.2f} |")


if __name__ == "__main__":
    raise SystemExit(main())
