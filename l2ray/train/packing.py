"""Padding-free packing: several traces per row up to ``max_seq_len``, attention kept within each.

No Ray import. A packed row concatenates traces; ``position_ids`` restart at 0 for each trace and
no ``attention_mask`` is passed, from which transformers builds a block-diagonal causal mask (sdpa
and eager) or varlen boundaries (FlashAttention-2): no token attends across a trace boundary. The
first token of every trace has no target, so no trace is trained to predict its neighbour's start.

Example:
    >>> packs = pack_examples(examples, max_seq_len=4096, seed=0, rank=0)  # doctest: +SKIP
    >>> batch = collate_packed(micro_batch(packs, index, batch_size=1, seed=0))  # doctest: +SKIP
"""

from __future__ import annotations

import random
from typing import Any

from l2ray.train.examples import IGNORE_INDEX, Example


def pack_examples(examples: list[Example], max_seq_len: int, seed: int, rank: int = 0) -> list[list[Example]]:
    """Group a seeded shuffle of ``examples`` into packs of at most ``max_seq_len`` tokens (first fit).

    A function of its arguments alone, so a resumed run rebuilds the same packs. Every example is
    at most ``max_seq_len`` long already (`encode_example` truncates).
    """
    order = list(range(len(examples)))
    random.Random(f"pack:{seed}:{rank}").shuffle(order)
    packs: list[list[Example]] = []
    room: list[int] = []
    for index in order:
        example = examples[index]
        fit = next((p for p, free in enumerate(room) if free >= len(example.input_ids)), None)
        if fit is None:
            packs.append([example])
            room.append(max_seq_len - len(example.input_ids))
        else:
            packs[fit].append(example)
            room[fit] -= len(example.input_ids)
    return packs


def collate_packed(packs: list[list[Example]], pad_token_id: int = 0) -> dict[str, Any]:
    """``input_ids``, ``labels`` and ``position_ids`` of packed rows (no ``attention_mask``), and
    ``real_tokens`` (a count, not a model input).

    Rows shorter than the longest are filled by one padding segment (its own positions, no
    targets), which only a micro-batch of several packs needs.
    """
    import torch

    rows = [_packed_row(pack) for pack in packs]
    width = max(len(ids) for ids, _, _ in rows)
    batch = {
        name: torch.full((len(rows), width), fill, dtype=torch.long)
        for name, fill in (("input_ids", pad_token_id), ("labels", IGNORE_INDEX), ("position_ids", 0))
    }
    for row, (ids, labels, positions) in enumerate(rows):
        n = len(ids)
        batch["input_ids"][row, :n] = torch.tensor(ids)
        batch["labels"][row, :n] = torch.tensor(labels)
        batch["position_ids"][row, :n] = torch.tensor(positions)
        batch["position_ids"][row, n:] = torch.arange(width - n)
    batch["real_tokens"] = torch.tensor(sum(len(ids) for ids, _, _ in rows))
    return batch


def _packed_row(pack: list[Example]) -> tuple[list[int], list[int], list[int]]:
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for example in pack:
        ids += example.input_ids
        labels += [IGNORE_INDEX, *example.labels[1:]]
        positions += list(range(len(example.input_ids)))
    return ids, labels, positions
