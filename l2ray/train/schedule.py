"""What each worker trains on and how many optimizer steps that takes (no Ray import).

The driver needs the step count for its progress total and the learning-rate schedule; every
worker needs it to report equally often. Both take it from `plan_steps` over the items of
`rank_items`, so under packing (where a rank's item count is its number of packs, known only after
tokenizing) the two cannot disagree.

Example:
    >>> plan_steps(rows_per_rank(10, 2), TrainConfig(num_workers=2, batch_size=2, epochs=3))
    StepPlan(steps_per_epoch=3, total_steps=9)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from l2ray.recipe import TrainConfig
from l2ray.train.examples import Example, encode_example, without_targets
from l2ray.train.mix import rank_share
from l2ray.train.packing import pack_examples


class StepPlan(NamedTuple):
    """Optimizer steps per pass over a rank's items, and in the whole run."""

    steps_per_epoch: int
    total_steps: int


class RankItems(NamedTuple):
    """One rank's micro-batch items (examples, or packs of them) and its own encoded examples (none
    for a rank that computes on a stand-in row)."""

    items: list[Any]
    examples: list[Example]


def plan_steps(items_per_rank: Sequence[int], config: TrainConfig) -> StepPlan:
    """The run's steps from each rank's item count (`rank_items`).

    Unpacked, the rows split evenly and a pass is what the fewest-row rank holds (a rank's one
    extra row waits for the next pass); packed, the rank with the most packs decides and the others
    wrap around. Either way every rank takes the same number of steps.
    """
    per_rank = max(items_per_rank) if config.packing else min(items_per_rank)
    micro_batches = math.ceil(max(1, per_rank) / config.batch_size)  # a rank without rows: a stand-in
    steps_per_epoch = math.ceil(micro_batches / config.grad_accum)
    return StepPlan(steps_per_epoch, config.max_steps or config.epochs * steps_per_epoch)


def rows_per_rank(rows: int, world: int) -> list[int]:
    """How many of ``rows`` records each rank's share holds (`l2ray.train.mix.rank_share`)."""
    return [len(range(rank, rows, world)) for rank in range(world)]


def rank_items(
    records: list[dict[str, Any]], rank: int, world: int, tokenizer: Any, config: TrainConfig, seed: int
) -> RankItems:
    """Worker ``rank``'s fixed share of the mix, tokenized, and packed when ``config.packing``.

    A mix smaller than the worker count leaves some ranks without rows. They still run every step
    (FSDP's collectives need every rank) on a stand-in row without targets: with the loss normalised
    by the targets of all ranks, their gradient is zero and the update is exactly the mean over the
    real rows.
    """
    examples = _encoded(rank_share(records, rank, world), tokenizer, config.max_seq_len)
    items: list[Any] = examples
    if not examples:
        stand_in = rank_share(records, rank % len(records), len(records))
        items = [without_targets(e) for e in _encoded(stand_in, tokenizer, config.max_seq_len)]
    if config.packing:
        items = pack_examples(items, config.max_seq_len, seed, rank)
    return RankItems(items, examples)


def run_steps(records: list[dict[str, Any]], tokenizer: Any, config: TrainConfig, seed: int) -> StepPlan:
    """The run's steps as the workers will take them: unpacked from the row counts alone, packed
    from every rank's packs (the driver tokenizes the mix once for this)."""
    world = config.num_workers
    if not config.packing:
        return plan_steps(rows_per_rank(len(records), world), config)
    counts = [len(rank_items(records, rank, world, tokenizer, config, seed).items) for rank in range(world)]
    return plan_steps(counts, config)


def _encoded(records: list[dict[str, Any]], tokenizer: Any, max_seq_len: int) -> list[Example]:
    return [encode_example(tokenizer, r["question"], r["assistant"], max_seq_len) for r in records]
