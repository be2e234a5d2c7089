"""The policy as a vLLM V1 logits processor: the vLLM adapter over `l2ray.decode.batch`.

A request carries its fresh policy as ``SamplingParams.extra_args = {"l2ray": encode_policy(...)}``
(one key: vLLM's ``extra_args`` values must be flat). The processor keeps one `RequestPolicy` per
row of vLLM's persistent batch — created when the request is added, dropped when it is removed,
carried along when rows move or swap — and feeds each policy the tokens vLLM sampled, read from the
request's live output-id list. Rows without the key are left alone.

A removed row is *parked*, not forgotten: vLLM also removes a request it preempts or does not
schedule for a step, and adds it back later with the same ``SamplingParams`` object. A policy holds
state its tokens cannot rebuild (ignores spent, the rest of a forced ``ignore_str``, its random draws),
so the parked policy comes back with the request instead of a fresh one replayed over the tokens.

vLLM cannot replace a sampled token: its processors run before sampling (after ``min_tokens`` and
``logit_bias``, before penalties and temperature). So s1's ignore acts on the most likely token
after the tag edits: where that is the end of thinking and ignores remain, the position is forced to
``ignore_str``'s first token (its other tokens follow one per step), and while ignores remain the end
of thinking is banned so sampling cannot slip past. Under greedy decoding this is exactly the
transformers adapter's behaviour (same tag choices and budget cuts); under sampling the ignore
triggers where the end of thinking is the mode, not where it happened to be drawn.

This interface is the V1 model runner's (the one vLLM uses on CPU, and on GPU with
``VLLM_USE_V2_MODEL_RUNNER=0``, which `l2ray.decode.vllm_engine` sets); Model Runner V2's processor
interface (``vllm.v1.worker.gpu.sample.logits_processor``) is another one and rejects this class.

Example:
    >>> LLM(model=path, logits_processors=[L2rayLogitsProcessor])  # doctest: +SKIP
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from l2ray.decode.batch import add_biases, budget_edits, tag_edits
from l2ray.decode.policy import RequestPolicy, decode_policy

SPEC_KEY = "l2ray"
"""The ``extra_args`` key that carries a request's encoded policy."""
PARKED_ROWS = 4096
"""Removed requests whose policies are kept for their return: finished requests are removed too and
never return, so the lot is bounded; a preempted request returns long before 4096 others leave."""


class L2rayLogitsProcessor(LogitsProcessor):
    """Language-tag control and budget forcing for every row whose request carries a policy."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        """Refuse a malformed spec when the request arrives (a 400 at a vLLM server), not mid-batch."""
        spec = (sampling_params.extra_args or {}).get(SPEC_KEY)
        if spec is not None:
            decode_policy(str(spec))

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self.rows: dict[int, _Row] = {}
        self.parked: OrderedDict[int, _Row] = OrderedDict()
        """Rows of removed requests by ``id`` of their params (each row holds its params, so an id
        cannot be reused while parked); the oldest go first past `PARKED_ROWS`."""

    def is_argmax_invariant(self) -> bool:
        return False  # forcing and banning change the argmax

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        """Apply vLLM's batch changes in its documented order: removed, added, moved."""
        if batch_update is None:
            return
        for index in batch_update.removed:
            self._park(self.rows.pop(index, None))
        for index, params, _prompt_ids, output_ids in batch_update.added:
            # A slot freed and refilled in one step is not in ``removed`` (vLLM pops it from there):
            # what still sits at the index is a removed request's row, to park as well.
            self._park(self.rows.pop(index, None))
            spec = (params.extra_args or {}).get(SPEC_KEY)
            if spec is not None:
                self.rows[index] = self._resumed(params, output_ids) or _Row(
                    decode_policy(str(spec)), output_ids, params
                )
        for first, second, direction in batch_update.moved:
            moving = self.rows.pop(first, None)
            other = self.rows.pop(second, None)
            if moving is not None:
                self.rows[second] = moving
            if other is not None and direction == MoveDirectionality.SWAP:
                self.rows[first] = other

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        indexes = sorted(self.rows)
        policies = [self.rows[i].observed() for i in indexes]
        at = torch.tensor(indexes, device=logits.device)
        edited = tag_edits(policies, logits[at])
        edited = budget_edits(policies, edited.argmax(dim=-1).tolist(), edited)
        logits[at] = ban_ignored_ends(policies, edited)
        return logits

    def _park(self, row: _Row | None) -> None:
        if row is None:
            return
        self.parked[id(row.params)] = row
        while len(self.parked) > PARKED_ROWS:
            self.parked.popitem(last=False)

    def _resumed(self, params: SamplingParams, output_ids: list[int]) -> _Row | None:
        """The parked row of a request vLLM adds back (same params object), else ``None``."""
        row = self.parked.get(id(params))
        if row is None or row.params is not params:
            return None
        del self.parked[id(params)]
        row.output_ids = output_ids
        return row


def ban_ignored_ends(policies: list[RequestPolicy], scores: torch.Tensor) -> torch.Tensor:
    """Ban the end of thinking in rows that would turn it into ``ignore_str`` (see the module doc)."""
    bans = [
        {p.vocab.think_end_id: float("-inf")} if p.ignores_end() and p.vocab.think_end_id is not None else {}
        for p in policies
    ]
    return add_biases(scores, bans)


@dataclass
class _Row:
    """One request's policy and vLLM's live list of its output ids (read, never written)."""

    policy: RequestPolicy
    output_ids: list[int]
    params: SamplingParams
    seen: int = 0

    def observed(self) -> RequestPolicy:
        """The policy, fed every token sampled since the last step (async scheduling leaves ``-1``
        placeholders at the end until the token arrives: stop there)."""
        while self.seen < len(self.output_ids) and self.output_ids[self.seen] >= 0:
            self.policy.observe(self.output_ids[self.seen])
            self.seen += 1
        return self.policy


__all__ = ["PARKED_ROWS", "SPEC_KEY", "L2rayLogitsProcessor", "ban_ignored_ends"]
