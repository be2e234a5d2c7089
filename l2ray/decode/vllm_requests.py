"""A request's intervention inside a vLLM engine: how it travels there and where it waits when preempted.

A request carries its `PolicySpec` as ``SamplingParams.extra_args = {SPEC_KEY: spec.to_json(),
NONCE_KEY: <random id>}`` (vLLM's ``extra_args`` values must be flat; over HTTP ``extra_body=
{"vllm_xargs": …}``). The model's constants (tag ids, ``</think>``, stop ids) are not in it: each
engine reads them once (`engine_vocab`). The nonce names the request to the engine's processors,
which see only its sampling parameters: vLLM removes a request it preempts and adds it back later —
Model Runner V2 in another slot, with a fresh copy of its parameters — and the state its tokens
cannot rebuild (ignores spent, the rest of a forced ``ignore_str``, the draws spent) waits in a
`ParkingLot` under that nonce until it returns.

Example:
    >>> from l2ray.recipe import InterventionConfig
    >>> args = request_args(PolicySpec(InterventionConfig(force="zh")))
    >>> read_spec(args)[0].config.force
    'zh'
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from l2ray.decode.spec import PolicySpec, ReasoningVocab

SPEC_KEY = "l2ray"
"""The ``extra_args`` key that carries a request's `PolicySpec` as JSON."""
NONCE_KEY = "l2ray_request"
"""The ``extra_args`` key of the request's random id (parking across preemption)."""
PARKED_ROWS = 4096
"""Parked requests kept: finished requests are parked too (a processor is not told which) and never
return, so the lot is bounded; a preempted request returns long before 4096 others leave."""

Item = TypeVar("Item")


def request_args(spec: PolicySpec) -> dict[str, Any]:
    """The ``extra_args`` of a request with this intervention."""
    return {SPEC_KEY: spec.to_json(), NONCE_KEY: secrets.randbits(62)}


def read_spec(extra_args: Mapping[str, Any] | None) -> tuple[PolicySpec, int | None] | None:
    """``(spec, nonce)`` of a request's ``extra_args``, ``None`` without a spec; raises `PolicyError`
    on a malformed one (`validate_params` has refused those at admission)."""
    text = (extra_args or {}).get(SPEC_KEY)
    if text is None:
        return None
    nonce = (extra_args or {}).get(NONCE_KEY)
    return PolicySpec.from_json(str(text)), int(nonce) if nonce is not None else None


def validate_params(sampling_params: Any) -> None:
    """Refuse a malformed spec when the request arrives (a 400 at a vLLM server), not mid-batch."""
    read_spec(sampling_params.extra_args)


def engine_vocab(vllm_config: Any) -> ReasoningVocab:
    """The model's reasoning vocabulary, read once per engine from its tokenizer and generation config."""
    from l2ray.decode.codec import Codec

    return Codec.from_pretrained(vllm_config.model_config.tokenizer).vocab


class ParkingLot(Generic[Item]):
    """What waits for a preempted request, by nonce; the oldest leave first past `PARKED_ROWS`."""

    def __init__(self, capacity: int = PARKED_ROWS) -> None:
        self.capacity = capacity
        self._items: OrderedDict[int, Item] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, nonce: int, item: Item) -> None:
        self._items[nonce] = item
        self._items.move_to_end(nonce)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def take(self, nonce: int | None) -> Item | None:
        """The item parked under ``nonce`` (removed), or ``None``."""
        return None if nonce is None else self._items.pop(nonce, None)


__all__ = [
    "NONCE_KEY",
    "PARKED_ROWS",
    "SPEC_KEY",
    "ParkingLot",
    "engine_vocab",
    "read_spec",
    "request_args",
    "validate_params",
]
