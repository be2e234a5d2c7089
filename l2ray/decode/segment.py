"""The segment loop: the same policy for generators that only speak HTTP (OpenAI ``/v1/completions``).

Such a generator cannot run our logits processors, but it can return each token's top-``k``
alternatives and honour ``logit_bias``. The loop asks for a chunk of raw (un-intervened) tokens, then
replays the policy over it token by token exactly as the processors would:

- a *forced* token (rest of ``ignore_str``, end of thinking on a spent budget, the forced opening
  tag) is appended without asking the generator;
- at a *switch point* (a tag among the top-``k`` alternatives) the policy draws and, when it has a
  bias to apply, the generator is asked for that single position again with the bias as
  ``logit_bias`` — the choice;
- a chosen end of thinking may become ``ignore_str`` (s1);
- the first token that differs from the chunk invalidates the rest of the chunk: continue from the
  new prefix.

For greedy decoding this reproduces the fast path token for token (same seed → same draws → same
language choices); with sampling the generator's own RNG decides the non-tag tokens.

Example:
    >>> result = await run_segment_loop(backend, prompt_ids, policy, max_tokens=256)  # doctest: +SKIP
    >>> result.finish_reason, policy.switches  # doctest: +SKIP
    ('stop', 2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from l2ray.decode.policy import RequestPolicy

if TYPE_CHECKING:
    from l2ray.decode.engine import DecodeEngine

HTTP_BAN = -100.0
"""OpenAI's ``logit_bias`` floor; stands in for ``-inf`` over HTTP."""


@dataclass
class BackendStep:
    """One generated token and the top alternatives at its position (raw log-probabilities)."""

    token: int
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class BackendResult:
    """What one completion call returned; ``finish_reason`` ``"stop"`` means the next token was EOS."""

    steps: list[BackendStep]
    finish_reason: str


class CompletionBackend(Protocol):
    """A generator that continues token ids (an OpenAI-compatible ``/v1/completions`` or in-process)."""

    async def complete(
        self,
        prompt_ids: list[int],
        max_tokens: int,
        top_logprobs: int,
        logit_bias: dict[int, float],
        ignore_eos: bool = False,
    ) -> BackendResult: ...


@dataclass
class SegmentResult:
    """The generated token ids (no EOS) and why generation ended."""

    tokens: list[int]
    finish_reason: str
    calls: int


async def run_segment_loop(
    backend: CompletionBackend,
    prompt_ids: Sequence[int],
    policy: RequestPolicy,
    max_tokens: int,
    chunk: int = 32,
) -> SegmentResult:
    """Generate up to ``max_tokens`` with ``policy`` applied at every position (see the module doc)."""
    out: list[int] = []
    calls = 0
    prompt = list(prompt_ids)

    def accept(token: int) -> None:
        out.append(token)
        policy.observe(token)

    while len(out) < max_tokens:
        forced = policy.forced_token()
        if forced is not None:
            accept(forced)
            continue
        remaining = max_tokens - len(out)
        if not policy.thinking:  # the intervention only acts while thinking
            result = await backend.complete(prompt + out, remaining, 0, {})
            calls += 1
            for step in result.steps:
                accept(step.token)
            return SegmentResult(out, result.finish_reason, calls)
        result = await backend.complete(prompt + out, min(chunk, remaining), policy.config.top_k, {})
        calls += 1
        steps = list(result.steps)
        stopped = result.finish_reason == "stop"
        if stopped and len(steps) < min(chunk, remaining):
            # The EOS position goes through the policy too: fetch it with its alternatives.
            prefix = prompt + out + [s.token for s in steps]
            tail = await backend.complete(prefix, 1, policy.config.top_k, {}, ignore_eos=True)
            calls += 1
            steps += tail.steps
        diverged = False
        for step in steps:
            if policy.forced_token() is not None:
                diverged = True
                break
            token = step.token
            bias = policy.tag_bias([t for t, _ in step.top])
            if bias and any(t in policy.vocab.code_of for t, _ in step.top[: policy.config.top_k]):
                choice = await backend.complete(prompt + out, 1, 0, to_http_bias(bias), ignore_eos=True)
                calls += 1
                token = choice.steps[0].token
            token = policy.replace(token)
            if token in policy.vocab.stop_ids:
                policy.observe(token)
                return SegmentResult(out, "stop", calls)
            accept(token)
            if token != step.token:
                diverged = True
                break
            if len(out) >= max_tokens:
                break
        if not diverged and stopped and not steps:
            return SegmentResult(out, "stop", calls)
    return SegmentResult(out, "length", calls)


def to_http_bias(bias: dict[int, float]) -> dict[int, float]:
    """A policy bias as an OpenAI ``logit_bias`` (``-inf`` becomes -100, values clipped to ±100)."""
    return {
        token: HTTP_BAN if math.isinf(value) else max(min(value, 100.0), HTTP_BAN)
        for token, value in bias.items()
    }


class EngineBackend:
    """A `CompletionBackend` that decodes in-process with a `DecodeEngine` and no intervention:
    what an HTTP-only generator does, without the network (the loop's reference backend)."""

    def __init__(self, engine: DecodeEngine) -> None:
        self.engine = engine

    async def complete(
        self,
        prompt_ids: list[int],
        max_tokens: int,
        top_logprobs: int,
        logit_bias: dict[int, float],
        ignore_eos: bool = False,
    ) -> BackendResult:
        from l2ray.decode.engine import DecodeRequest

        request = DecodeRequest(
            list(prompt_ids),
            max_tokens,
            logit_bias=dict(logit_bias),
            logprobs=top_logprobs,
            ignore_eos=ignore_eos,
        )
        [events] = self.engine.run([request])
        steps = [BackendStep(e.token, e.top or []) for e in events if not e.is_stop]
        return BackendResult(steps, events[-1].finish_reason or "length")
