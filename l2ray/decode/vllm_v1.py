"""The intervention as a logits processor of vLLM's V1 model runner (vLLM's CPU build; GPUs with
``VLLM_USE_V2_MODEL_RUNNER=0``), over `PolicyCore`: slot = the request's row of V1's persistent batch.

V1 tells a processor about its batch in `update_state` — rows removed, then added (each with its
``SamplingParams`` and the request's live output-id list), then moved or swapped when it condenses —
and calls `apply` on the logits of rows ``0..batch_size-1``. A request's row of the core is written
when it is added, moved with it, and parked (`ParkingLot`, by its nonce) when it is removed: vLLM
also removes a request it preempts and adds it back later. The tokens sampled since the last step
are read from the output-id lists — the one per-row host step here, since V1 keeps them in Python
lists (async scheduling leaves ``-1`` placeholders at the end until a token arrives: reading stops
there). Everything else is the core's: a fixed number of tensor operations per step.

vLLM cannot replace a sampled token (its processors run before sampling), so s1's ignore acts on the
most likely token after the tag edits (`PolicyCore.before_sampling`); under greedy decoding that is
the transformers engine's behaviour exactly.

Example:
    >>> LLM(model=path, logits_processors=[L2rayLogitsProcessor])  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from l2ray.decode.core import PolicyCore
from l2ray.decode.slots import Parked
from l2ray.decode.spec import PolicyError, ReasoningVocab
from l2ray.decode.vllm_requests import ParkingLot, read_spec, validate_params

log = logging.getLogger("l2ray.decode")


@dataclass
class _Row:
    """Host-side bookkeeping of a slot: vLLM's live output-id list, how much of it was observed."""

    outputs: list[int]
    seen: int
    nonce: int | None


@dataclass
class _Waiting:
    parked: Parked
    seen: int


class V1Processor(LogitsProcessor):
    """Language-tag control and budget forcing for every row whose request carries a spec.

    Args:
        vocab: the model's reasoning vocabulary.
        device: the logits' device.
        slots: rows of the persistent batch (``max_num_seqs``; the core grows past it if needed).
    """

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        """Refuse a malformed spec when the request arrives (a 400 at a vLLM server), not mid-batch."""
        validate_params(sampling_params)

    def __init__(self, vocab: ReasoningVocab, device: torch.device | str = "cpu", slots: int = 256) -> None:
        self.core = PolicyCore(vocab, slots, device, counts=False)
        self.rows: dict[int, _Row] = {}
        self.parking: ParkingLot[_Waiting] = ParkingLot()

    def is_argmax_invariant(self) -> bool:
        return False  # forcing and banning change the argmax

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        """Apply vLLM's batch changes in its documented order: removed, added, moved."""
        if batch_update is None:
            return
        for index in batch_update.removed:
            self._park(index)
        for index, params, _prompt_ids, output_ids in batch_update.added:
            # A slot freed and refilled in one step is not in ``removed`` (vLLM pops it from there):
            # what still sits at the index is a removed request's row, to park as well.
            self._park(index)
            self._add(index, params, output_ids)
        for first, second, direction in batch_update.moved:
            self._move(first, second, swap=direction == MoveDirectionality.SWAP)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        count = logits.shape[0]
        needs = self.core.needs(slice(0, count))
        if not needs.any:
            return logits
        rows = self.core.rows(count)
        for tokens in self._fresh_tokens(count, logits.device):
            self.core.observe(rows, tokens, needs=needs)
        return self.core.before_sampling(rows, logits, needs)

    def _add(self, index: int, params: SamplingParams, output_ids: list[int]) -> None:
        read = read_spec(params.extra_args)
        if read is None:
            return
        spec, nonce = read
        try:
            spec.check(self.core.vocab)
        except PolicyError as exc:  # a client that bypassed l2ray's codec: decode without the policy
            log.error("request without its l2ray intervention: %s", exc)
            return
        waiting = self.parking.take(nonce)
        if waiting is not None:
            self.core.store.restore(index, waiting.parked)
        else:
            self.core.admit(index, spec)
        self.rows[index] = _Row(output_ids, waiting.seen if waiting else 0, nonce)

    def _park(self, index: int) -> None:
        row = self.rows.pop(index, None)
        if row is None:
            return
        if row.nonce is not None:
            self.parking.put(row.nonce, _Waiting(self.core.store.park(index), row.seen))
        self.core.store.release(index)

    def _move(self, first: int, second: int, swap: bool) -> None:
        moving, other = self.rows.pop(first, None), self.rows.pop(second, None)
        self.core.store.move(first, second, swap)
        if moving is not None:
            self.rows[second] = moving
        if other is not None and swap:
            self.rows[first] = other

    def _fresh_tokens(self, count: int, device: torch.device) -> list[torch.Tensor]:
        """The tokens each row sampled since the last step, as columns (``-1`` where a row has none)."""
        fresh: dict[int, list[int]] = {}
        for index, row in self.rows.items():
            if index >= count:
                continue
            new = row.outputs[row.seen :]
            if new and new[-1] < 0:  # async scheduling's placeholders: wait for those tokens
                new = new[: next(i for i, token in enumerate(new) if token < 0)]
            if new:
                fresh[index] = new
                row.seen += len(new)
        if not fresh:
            return []
        columns = [[-1] * count for _ in range(max(len(tokens) for tokens in fresh.values()))]
        for index, tokens in fresh.items():
            for column, token in enumerate(tokens):
                columns[column][index] = token
        return list(torch.tensor(columns, dtype=torch.long).to(device, non_blocking=True))


__all__ = ["V1Processor"]
