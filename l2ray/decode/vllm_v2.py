"""The intervention as a logits processor of vLLM's Model Runner V2 (its GPU default), over `PolicyCore`.

Model Runner V2 keeps every request in a slot (``req_idx``) and its committed tokens on the device
(``req_states.all_token_ids[slot, :total_len]``); `apply` runs once per step for the whole batch,
its rows mapped to slots by ``ctx.expanded_idx_mapping``. So the core's slots are V2's slots, and a
step reads each row's new token on the device — no host sync and no Python per row anywhere:

- `add_request` stages the request's row (written by `apply_staged_writes`, which V2 calls before
  the forward pass); the slot's previous occupant — finished, or preempted — is parked by its nonce
  first, since V2 does not say which;
- a preempted request comes back through `add_request` again (another slot, its partial output in
  the prefill): its parked row is restored and the tokens it had not yet observed (at most one, the
  last it sampled) are replayed; one whose row was not kept replays its whole output (ignores and
  draws already spent cannot be rebuilt from tokens);
- `apply` observes each row's tokens committed since it last looked (``CONSUMED`` … ``total_len``),
  skips rows still in chunked prefill (their sampled token is dropped), and edits in place.

Speculative decoding gives a request several rows per step (draft positions) that a sequential
state machine cannot judge before the drafts are verified: an engine with it refuses this processor.

Example:
    >>> LLM(model=path, logits_processors=[L2rayLogitsProcessor])  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from vllm.v1.worker.gpu.sample.logits_processor.interface import (
    LogitsContext,
    LogitsProcessor,
    LogitsProcRequestState,
)

from l2ray.decode.core import PolicyCore, Rows
from l2ray.decode.slots import Col, Needs, Parked
from l2ray.decode.spec import PolicyError, ReasoningVocab
from l2ray.decode.vllm_requests import ParkingLot, read_spec, validate_params

log = logging.getLogger("l2ray.decode")


class ModelRunnerV2Processor(LogitsProcessor):
    """Language-tag control and budget forcing for every slot whose request carries a spec.

    Args:
        vocab: the model's reasoning vocabulary.
        req_states: Model Runner V2's per-slot buffers (read only).
    """

    def __init__(self, vocab: ReasoningVocab, req_states: LogitsProcRequestState) -> None:
        self.req_states = req_states
        self.core = PolicyCore(vocab, req_states.max_num_reqs, req_states.device, counts=False)
        self.nonces: dict[int, int | None] = {}
        """The nonce of the request each slot of ours holds."""
        self.parking: ParkingLot[Parked] = ParkingLot()
        self._replays: dict[int, int] = {}

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        """Refuse a malformed spec when the request arrives (a 400 at a vLLM server), not mid-batch."""
        validate_params(sampling_params)

    def add_request(self, req_idx: int, sampling_params: Any) -> bool:
        self._park(req_idx)
        read = read_spec(sampling_params.extra_args)
        if read is None:
            return False
        spec, nonce = read
        try:
            spec.check(self.core.vocab)
        except PolicyError as exc:  # a client that bypassed l2ray's codec: decode without the policy
            log.error("request without its l2ray intervention: %s", exc)
            return False
        prompt, prefill = (
            int(self.req_states.prompt_len.np[req_idx]),
            int(self.req_states.prefill_len.np[req_idx]),
        )
        parked = self._returning(nonce)
        if parked is not None:  # a preempted request: one read of its parked row, never per step
            self.core.store.restore(req_idx, parked)
            consumed = int(parked.table[Col.CONSUMED])
        else:
            self.core.admit(req_idx, spec, consumed=prompt)
            consumed = prompt
        if prefill > consumed:  # its output so far, not yet observed: replay it before its next step
            self._replays[req_idx] = prefill - consumed
        self.nonces[req_idx] = nonce
        return True

    def apply_staged_writes(self) -> None:
        self.core.store.flush()
        for slot, count in self._replays.items():
            rows = self.core.rows(1, torch.tensor([slot], device=self.core.device))
            needs = self.core.needs(np.array([slot]))
            for _ in range(count):
                self._observe_committed(rows, needs)
            self.core.commit(rows)
        self._replays.clear()

    def apply(self, logits: torch.Tensor, ctx: LogitsContext) -> torch.Tensor:
        needs = self.core.needs(ctx.idx_mapping_np)
        if not needs.any:
            return logits
        slots = ctx.expanded_idx_mapping.long()
        rows = self.core.rows(logits.shape[0], slots)
        self._observe_committed(rows, needs)
        kept = ctx.pos.long() >= self.req_states.prefill_len.gpu[slots].long() - 1
        logits = self.core.before_sampling(rows, logits, needs, kept)
        self.core.commit(rows)
        return logits

    def _observe_committed(self, rows: Rows, needs: Needs) -> None:
        """Each row's next committed token (if its sequence grew past what was observed)."""
        consumed = rows.table[:, Col.CONSUMED]
        valid = consumed < self.req_states.total_len.gpu[rows.slots].long()
        history = self.req_states.all_token_ids.gpu
        tokens = history[rows.slots, consumed.clamp(0, history.shape[1] - 1)].long()
        self.core.observe(rows, tokens, valid, needs)
        rows.cols[Col.CONSUMED].add_(valid)

    def _park(self, slot: int) -> None:
        if slot not in self.nonces:
            return
        nonce = self.nonces.pop(slot)
        if nonce is not None:
            self.parking.put(nonce, self.core.store.park(slot))
        self.core.store.release(slot)

    def _returning(self, nonce: int | None) -> Parked | None:
        """A returning request's row: parked, or still in the slot it left (not refilled yet)."""
        if nonce is None:
            return None
        left = next((slot for slot, held in self.nonces.items() if held == nonce), None)
        if left is not None:
            self._park(left)
        return self.parking.take(nonce)


__all__ = ["ModelRunnerV2Processor"]
