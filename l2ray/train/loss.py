"""A next-token loss that never holds the batch × sequence × vocabulary logits.

No Ray import. `LossModel` wraps a causal LM so that its forward returns the summed loss: the
decoder gives hidden states, then the output head and cross-entropy run chunk by chunk over the
target positions only, each chunk recomputed in backward (activation checkpointing), so the peak
is one chunk's logits (``chunk_tokens × vocab``) instead of the whole sequence's in fp32 with its
gradient (≈25 GB at 16k tokens and Qwen's 152k vocabulary).

Running the head inside the wrapper's forward matters under FSDP2: the wrapper is the root FSDP
unit, so the (tied) embedding and head weights are gathered while the loss needs them.

Example:
    >>> loss_sum, targets = LossModel(model, chunk_tokens=1024)(input_ids, labels)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch

from l2ray.train.examples import IGNORE_INDEX


class LossModel(torch.nn.Module):
    """``forward(input_ids, labels, attention_mask=None, position_ids=None) -> (loss sum, targets)``.

    ``causal_lm`` is any transformers causal LM (also a peft model): its ``get_decoder()`` gives
    the hidden states and ``get_output_embeddings()`` the head applied per chunk.
    """

    def __init__(self, causal_lm: Any, chunk_tokens: int = 2048) -> None:
        super().__init__()
        self.causal_lm = causal_lm
        self.chunk_tokens = chunk_tokens

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        decoder = self.causal_lm.get_decoder()
        hidden = decoder(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        head = self.causal_lm.get_output_embeddings()
        return chunked_loss_sum(hidden, head, labels, self.chunk_tokens)


def chunked_loss_sum(
    hidden: torch.Tensor, head: Any, labels: torch.Tensor, chunk_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Sum of next-token cross-entropy over target positions, number of targets).

    Position ``t`` predicts ``labels[t + 1]``; positions without a target are dropped before the
    head runs, so prompt tokens cost no vocabulary projection at all.
    """
    next_tokens = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:].reshape(-1)
    keep = next_tokens != IGNORE_INDEX
    states = hidden.reshape(-1, hidden.shape[-1])[keep]
    targets = next_tokens[keep]
    if targets.numel() == 0:
        # No target here (a stand-in row): a zero loss that still runs through the head, so every
        # parameter gets a (zero) gradient and FSDP's reduce-scatters match the other ranks'.
        return head(hidden.reshape(-1, hidden.shape[-1])[:1]).float().sum() * 0.0, keep.sum()
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, targets.numel(), chunk_tokens):
        end = start + chunk_tokens
        total = total + torch.utils.checkpoint.checkpoint(
            _chunk_loss, head, states[start:end], targets[start:end], use_reentrant=False
        )
    return total, keep.sum()


def _chunk_loss(head: Any, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(states).float()  # fp32 for a stable log-softmax, one chunk at a time
    return torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
