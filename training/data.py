"""The training data: a .txt / .jsonl corpus tokenized into fixed-length blocks, served in a
seeded order that is a pure function of (seed, micro-batch index), so resuming needs only the step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch


def parse_corpus(raw: bytes, name: str) -> list[str]:
    """Lines of a .txt file, or the `text` field of each line of a .jsonl file (blank lines skipped)."""
    text = raw.decode("utf-8")
    if name.endswith(".jsonl"):
        texts = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise ValueError(f"dataset {name} line {number}: expected an object with a string `text` field")
            texts.append(record["text"])
        return texts
    if name.endswith(".txt"):
        return [line for line in text.splitlines() if line.strip()]
    raise ValueError(f"dataset {name!r}: expected a .txt or .jsonl file")


def pack_blocks(token_ids: list[list[int]], seq_len: int, eos_id: int | None) -> torch.Tensor:
    """Concatenate documents (eos-separated) and cut into [n_blocks, seq_len]; the tail is dropped."""
    flat: list[int] = []
    for ids in token_ids:
        flat.extend(ids)
        if eos_id is not None:
            flat.append(eos_id)
    n_blocks = len(flat) // seq_len
    if n_blocks == 0:
        raise ValueError(f"dataset has {len(flat)} tokens, fewer than one seq_len block ({seq_len})")
    return torch.tensor(flat[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)


@dataclass(frozen=True)
class BlockSampler:
    """Micro-batch i holds samples [i*B, (i+1)*B) of an endless stream of seeded per-epoch permutations."""

    blocks: torch.Tensor
    batch_size: int
    seed: int

    def _permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.blocks), generator=generator)

    def indices(self, micro_batch: int) -> list[int]:
        n = len(self.blocks)
        start = micro_batch * self.batch_size
        out, perms = [], {}
        for sample in range(start, start + self.batch_size):
            epoch, offset = divmod(sample, n)
            if epoch not in perms:
                perms[epoch] = self._permutation(epoch)
            out.append(int(perms[epoch][offset]))
        return out

    def batch(self, micro_batch: int) -> torch.Tensor:
        return self.blocks[self.indices(micro_batch)]
