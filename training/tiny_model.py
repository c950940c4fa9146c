"""A tiny causal LM for tests and the demo: a GPT-2 config, a byte-level BPE tokenizer trained
locally on the dataset, saved with save_pretrained. No Hub download.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from training.data import parse_corpus

_WORDS = (
    "spot price zone region instance capacity checkpoint resume deadline budget gpu train model "
    "loss step batch token cheap fast stable move stay notice shard weight optimizer cloud "
    "the a of to and in on for with is was will be each every one two three"
).split()


def write_demo_dataset(path: Path | str, lines: int = 400, seed: int = 0) -> Path:
    """A deterministic synthetic corpus; .jsonl gets {"text": ...} records, anything else plain lines."""
    path = Path(path)
    rng = random.Random(seed)
    sentences = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 16))) + "." for _ in range(lines)]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({"text": s}) + "\n" for s in sentences))
    else:
        path.write_text("\n".join(sentences) + "\n")
    return path


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on `texts`, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
        unk_token="<|endoftext|>", pad_token="<|endoftext|>",
    )


def tiny_config(vocab_size: int, layers: int, hidden: int, heads: int | None = None, positions: int = 512):
    from transformers import GPT2Config

    heads = heads or max(1, hidden // 16)
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    return GPT2Config(
        vocab_size=vocab_size, n_positions=positions, n_embd=hidden, n_layer=layers, n_head=heads,
        bos_token_id=0, eos_token_id=0,
    )


def build_tiny_model(
    out_dir: Path | str, dataset: Path | str, *, layers: int = 2, hidden: int = 64,
    vocab_size: int = 512, positions: int = 512, seed: int = 0,
) -> Path:
    """Build a GPT-2-style causal LM and a tokenizer trained on `dataset`; save both to out_dir."""
    import torch
    from transformers import GPT2LMHeadModel

    if layers < 1 or hidden < 8:
        raise ValueError(f"layers must be >= 1 and hidden >= 8, got layers={layers}, hidden={hidden}")
    dataset = Path(dataset)
    texts = parse_corpus(dataset.read_bytes(), dataset.name)
    tokenizer = train_tokenizer(texts, vocab_size)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(tiny_config(len(tokenizer), layers, hidden, positions=positions))
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.tiny_model", description=__doc__)
    parser.add_argument("--out", required=True, type=Path, help="directory to save the model into")
    parser.add_argument("--dataset", required=True, type=Path, help=".txt or .jsonl corpus (written if missing)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--vocab-size", type=int, default=512)
    args = parser.parse_args(argv)
    if not args.dataset.exists():
        write_demo_dataset(args.dataset)
    out = build_tiny_model(args.out, args.dataset, layers=args.layers, hidden=args.hidden, vocab_size=args.vocab_size)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
