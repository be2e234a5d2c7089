"""Turn a trace into a training example: chat template, loss only on the assistant turn, truncation.

No Ray import: the worker loop calls these, and tests call them directly.

Example:
    >>> assistant = "<think>\\n<|lang:en|>5\\n</think>\\n\\n5"
    >>> example = encode_example(tokenizer, "What is 2+3?", assistant, max_seq_len=64)  # doctest: +SKIP
    >>> example.target_tokens > 0, example.truncated  # doctest: +SKIP
    (True, False)
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from typing import Any

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Example:
    """Token ids and labels of one conversation (labels are ``IGNORE_INDEX`` outside the assistant turn).

    Attributes:
        truncated: the conversation was longer than ``max_seq_len`` and was cut.
        dropped_tokens: how many tokens the cut removed.
    """

    input_ids: list[int]
    labels: list[int]
    truncated: bool
    dropped_tokens: int

    @property
    def target_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def encode_example(tokenizer: Any, question: str, assistant: str, max_seq_len: int) -> Example:
    """Render ``[user, assistant]`` with the tokenizer's chat template; train on the assistant part.

    The loss starts where the generation prompt (``add_generation_prompt=True``) ends, so whatever
    the template itself opens (ChatML's ``<|im_start|>assistant\\n``, l2ray's ``<think>\\n``) is
    context, and everything the model has to produce — thinking, answer, end-of-turn — is a target.
    Templates whose prompt is not a prefix of the full conversation fall back to the start of the
    assistant text.
    """
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": assistant}]
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    if full.startswith(prompt):
        boundary = len(prompt)
    else:
        boundary = full.rfind(assistant)
        if boundary < 0:
            raise ValueError(
                "the chat template rewrites the assistant turn; cannot locate it for loss masking"
            )
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = encoded["input_ids"]
    labels = [
        token if start >= boundary else IGNORE_INDEX
        for token, (start, _end) in zip(ids, encoded["offset_mapping"], strict=True)
    ]
    dropped = max(0, len(ids) - max_seq_len)
    return Example(ids[:max_seq_len], labels[:max_seq_len], truncated=dropped > 0, dropped_tokens=dropped)


def without_targets(example: Example) -> Example:
    """``example`` with no target token: it costs compute and contributes no gradient."""
    return dataclasses.replace(example, labels=[IGNORE_INDEX] * len(example.labels))


def micro_batch(
    examples: list[Example], index: int, batch_size: int, seed: int, rank: int = 0
) -> list[Example]:
    """Micro-batch number ``index`` of worker ``rank``: a seeded reshuffle every pass over its examples.

    A function of the index alone, so a resumed run sees exactly the batches it would have seen.

    >>> rows = [Example([i], [i], False, 0) for i in range(5)]
    >>> [len(micro_batch(rows, index, 2, seed=0)) for index in range(4)]  # a pass's last batch is short
    [2, 2, 1, 2]
    """
    per_pass = math.ceil(len(examples) / batch_size)
    epoch, position = divmod(index, per_pass)
    order = list(range(len(examples)))
    random.Random(f"{seed}:{rank}:{epoch}").shuffle(order)
    chosen = order[position * batch_size : (position + 1) * batch_size]
    return [examples[i] for i in chosen]


def collate(examples: list[Example], pad_token_id: int) -> dict[str, Any]:
    """Right-pad a micro-batch: ``input_ids``, ``attention_mask`` and ``labels`` tensors."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        attention[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
