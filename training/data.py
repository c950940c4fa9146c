"""The training data: .txt/.jsonl corpora, prompt/completion records and `datasets` splits, turned
into fixed-length samples served in a seeded order that is a pure function of (seed, sample index),
so resuming needs only the number of samples already seen, at any world size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

import torch

IGNORE = -100  # label of a token that counts for no loss (prompt, padding)


@dataclass(frozen=True)
class PromptCompletion:
    prompt: str
    completion: str


Record = str | PromptCompletion


def _jsonl_record(line: str, name: str, number: int) -> Record:
    record = json.loads(line)
    if isinstance(record, dict) and isinstance(record.get("prompt"), str) and isinstance(record.get("completion"), str):
        return PromptCompletion(record["prompt"], record["completion"])
    if isinstance(record, dict) and isinstance(record.get("text"), str):
        return record["text"]
    raise ValueError(f"dataset {name} line {number}: expected an object with a string `text` field, "
                     "or string `prompt` and `completion` fields")


def parse_records(raw: bytes, name: str) -> list[Record]:
    """Lines of a .txt file; or per line of a .jsonl file its `text` field, or its `prompt` and
    `completion` (loss on the completion only). Blank lines are skipped."""
    text = raw.decode("utf-8")
    if name.endswith(".jsonl"):
        return [_jsonl_record(line, name, number)
                for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if name.endswith(".txt"):
        return [line for line in text.splitlines() if line.strip()]
    raise ValueError(f"dataset {name!r}: expected a .txt or .jsonl file")


def parse_corpus(raw: bytes, name: str) -> list[str]:
    """The texts of a corpus (a prompt/completion record counts as prompt + completion)."""
    return [r if isinstance(r, str) else r.prompt + r.completion for r in parse_records(raw, name)]


def records_from_columns(columns: dict[str, list], text_column: str, where: str) -> list[Record]:
    """Records of a `datasets` split given as columns: prompt/completion when it has both, else `text_column`."""
    if "prompt" in columns and "completion" in columns:
        return [PromptCompletion(p, c) for p, c in zip(columns["prompt"], columns["completion"])]
    if text_column not in columns:
        raise ValueError(f"{where} has no column {text_column!r} (dataset_text_column). Choose between "
                         f"{', '.join(sorted(columns))}, or give prompt and completion columns")
    return [t for t in columns[text_column] if isinstance(t, str) and t.strip()]


@dataclass(frozen=True)
class Samples:
    """input_ids and labels, both [n, seq_len]; labels are IGNORE where a token counts for no loss."""

    input_ids: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.input_ids)


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


def completion_sample(prompt_ids: list[int], completion_ids: list[int], seq_len: int,
                      pad_id: int) -> tuple[list, list] | None:
    """One padded sample whose labels cover the completion only; None when the prompt leaves no
    room for any completion token."""
    ids = (prompt_ids + completion_ids)[:seq_len]
    labels = ([IGNORE] * len(prompt_ids) + completion_ids)[:seq_len]
    if all(label == IGNORE for label in labels):
        return None
    padding = seq_len - len(ids)
    return ids + [pad_id] * padding, labels + [IGNORE] * padding


def build_samples(records: list[Record], tokenizer, seq_len: int) -> Samples:
    """Texts are packed into blocks (every token counts); prompt/completion records become one
    padded sample each (completion tokens count). Both kinds may be mixed."""
    eos = tokenizer.eos_token_id
    texts = [r for r in records if isinstance(r, str)]
    pairs = [r for r in records if isinstance(r, PromptCompletion)]
    ids, labels = [], []
    if texts:
        blocks = pack_blocks(tokenizer(texts)["input_ids"], seq_len, eos)
        ids.append(blocks)
        labels.append(blocks.clone())
    if pairs:
        prompts = tokenizer([p.prompt for p in pairs], add_special_tokens=False)["input_ids"]
        completions = tokenizer([p.completion for p in pairs], add_special_tokens=False)["input_ids"]
        made = [completion_sample(p, c + ([eos] if eos is not None else []), seq_len, eos or 0)
                for p, c in zip(prompts, completions)]
        made = [m for m in made if m is not None]
        if not made:
            raise ValueError(f"every prompt is at least seq_len ({seq_len}) tokens long: no completion token to learn")
        ids.append(torch.tensor([m[0] for m in made], dtype=torch.long))
        labels.append(torch.tensor([m[1] for m in made], dtype=torch.long))
    return Samples(torch.cat(ids), torch.cat(labels))


@dataclass(frozen=True)
class SampleStream:
    """Sample i of an endless stream of seeded per-epoch permutations of the samples."""

    samples: Samples
    seed: int

    def _permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.samples), generator=generator)

    def indices(self, start: int, count: int) -> list[int]:
        n = len(self.samples)
        out, perms = [], {}
        for sample in range(start, start + count):
            epoch, offset = divmod(sample, n)
            if epoch not in perms:
                perms[epoch] = self._permutation(epoch)
            out.append(int(perms[epoch][offset]))
        return out

    def batch(self, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, labels) of samples [start, start + count)."""
        return self.rows(self.indices(start, count))

    def rows(self, chosen: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, labels) of the samples numbered `chosen` (indices into `samples`)."""
        return self.samples.input_ids[chosen], self.samples.labels[chosen]

    @cached_property
    def loss_tokens_per_sample(self) -> torch.Tensor:
        """[n]: the tokens of each sample that count for a causal LM's loss (labels shift by one:
        the first position predicts nothing)."""
        return (self.samples.labels[:, 1:] != IGNORE).sum(dim=1)


@dataclass(frozen=True)
class StepDeal:
    """How one optimizer step's samples are dealt over the ranks. The global batch is FIXED:
    batch_size x grad_accum samples per step whatever the world size, so max_steps means the same
    data on 1 GPU or 8 and a resume at another world size trains on. The step starting at stream
    index s holds samples [s, s + global_batch); rank r takes the contiguous chunk
    [s + r*G//W, s + (r+1)*G//W) (sizes differ by at most one) and cuts it into micro-batches of at
    most batch_size. Every rank runs `micro_steps` forward/backward passes, so the collectives of
    DDP and FSDP match; a rank whose chunk runs out first does an empty micro-batch (a padding pass
    of weight 0)."""

    batch_size: int
    grad_accum: int
    world: int

    def __post_init__(self):
        if self.world > self.global_batch:
            raise ValueError(
                f"{self.world} processes but a global batch of {self.global_batch} samples per step "
                f"(batch_size {self.batch_size} x grad_accum {self.grad_accum}): every process needs at least "
                f"one sample. Choose batch_size x grad_accum >= {self.world}, or run at most "
                f"{self.global_batch} processes")

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.grad_accum

    @property
    def micro_steps(self) -> int:
        """Forward/backward passes per step on every rank: the largest chunk's micro-batches."""
        largest = -(-self.global_batch // self.world)
        return -(-largest // self.batch_size)

    def chunk(self, rank: int) -> range:
        """Rank `rank`'s positions within the step, 0 <= position < global_batch."""
        return range(rank * self.global_batch // self.world, (rank + 1) * self.global_batch // self.world)

    def micro_batches(self, rank: int) -> list[range]:
        """Rank `rank`'s micro-batches as positions within the step, `micro_steps` of them (empty
        ranges at the end: padding passes)."""
        mine = self.chunk(rank)
        return [mine[m * self.batch_size:(m + 1) * self.batch_size] for m in range(self.micro_steps)]


@dataclass(frozen=True)
class BlockSampler:
    """Micro-batch i holds samples [i*B, (i+1)*B) of the stream (one process)."""

    blocks: torch.Tensor
    batch_size: int
    seed: int

    def _stream(self) -> SampleStream:
        return SampleStream(Samples(self.blocks, self.blocks), self.seed)

    def indices(self, micro_batch: int) -> list[int]:
        return self._stream().indices(micro_batch * self.batch_size, self.batch_size)

    def batch(self, micro_batch: int) -> torch.Tensor:
        return self.blocks[self.indices(micro_batch)]
