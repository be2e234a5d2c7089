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
language choices); with sampling (`Sampling`) the generator's own RNG decides the non-tag tokens,
each call seeded from the request's seed and the call's number, so a seeded request is
reproducible. The request's own ``logit_bias`` travels with every call, added to the policy's.

`stream_segment_loop` yields the accepted tokens after every generator call, the answer's included
(what streaming responses need); `run_segment_loop` collects them.

Example:
    >>> result = await run_segment_loop(backend, prompt_ids, policy, max_tokens=256)  # doctest: +SKIP
    >>> result.finish_reason, policy.switches  # doctest: +SKIP
    ('stop', 2)
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from l2ray.decode.policy import RequestPolicy

if TYPE_CHECKING:
    from l2ray.decode.engine import DecodeEngine

HTTP_BAN = -100.0
"""OpenAI's ``logit_bias`` floor; stands in for ``-inf`` over HTTP."""
SEED_RANGE = 2**63
"""Seeds sent to a generator stay below this (OpenAI servers take a signed 64-bit seed)."""


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


@dataclass(frozen=True)
class Sampling:
    """How a generator call picks tokens: greedy at temperature 0 (the default), else seeded sampling."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def for_call(self, call: int) -> Sampling:
        """The options of the ``call``-th generator call: a seed of its own, derived from this one.

        Reusing one seed for every call would replay the same random stream at each position.
        """
        if self.temperature <= 0 or self.seed is None:
            return self
        return Sampling(self.temperature, self.top_p, (self.seed + call) % SEED_RANGE)


GREEDY = Sampling()


class CompletionBackend(Protocol):
    """A generator that continues token ids (an OpenAI-compatible ``/v1/completions`` or in-process)."""

    async def complete(
        self,
        prompt_ids: list[int],
        max_tokens: int,
        top_logprobs: int,
        logit_bias: dict[int, float],
        ignore_eos: bool = False,
        sampling: Sampling = GREEDY,
    ) -> BackendResult: ...


@dataclass
class SegmentResult:
    """The generated token ids (no EOS) and why generation ended."""

    tokens: list[int]
    finish_reason: str
    calls: int


@dataclass
class SegmentDelta:
    """Tokens accepted since the previous delta; the last delta has ``finish_reason`` set."""

    tokens: list[int]
    finish_reason: str | None
    calls: int


async def run_segment_loop(
    backend: CompletionBackend,
    prompt_ids: Sequence[int],
    policy: RequestPolicy,
    max_tokens: int,
    chunk: int = 32,
    sampling: Sampling = GREEDY,
    logit_bias: dict[int, float] | None = None,
) -> SegmentResult:
    """Generate up to ``max_tokens`` with ``policy`` applied at every position (see the module doc)."""
    tokens: list[int] = []
    async for delta in stream_segment_loop(
        backend, prompt_ids, policy, max_tokens, chunk, sampling, logit_bias
    ):
        tokens += delta.tokens
        if delta.finish_reason is not None:
            return SegmentResult(tokens, delta.finish_reason, delta.calls)
    raise AssertionError("stream_segment_loop ended without a finish_reason")  # pragma: no cover


async def stream_segment_loop(
    backend: CompletionBackend,
    prompt_ids: Sequence[int],
    policy: RequestPolicy,
    max_tokens: int,
    chunk: int = 32,
    sampling: Sampling = GREEDY,
    logit_bias: dict[int, float] | None = None,
) -> AsyncIterator[SegmentDelta]:
    """`run_segment_loop`, yielding the tokens accepted after each generator call as they come."""
    out: list[int] = []
    sent = 0
    calls = 0
    prompt = list(prompt_ids)
    user_bias = dict(logit_bias or {})

    def accept(token: int) -> None:
        out.append(token)
        policy.observe(token)

    def delta(finish_reason: str | None) -> SegmentDelta:
        nonlocal sent
        fresh, sent = out[sent:], len(out)
        return SegmentDelta(fresh, finish_reason, calls)

    async def complete(
        prefix: list[int], n: int, top: int, bias: dict[int, float], ignore_eos: bool = False
    ) -> BackendResult:
        nonlocal calls
        calls += 1
        merged = to_http_bias(_add_biases(user_bias, bias))
        return await backend.complete(prefix, n, top, merged, ignore_eos, sampling.for_call(calls))

    while len(out) < max_tokens:
        forced = policy.forced_token()
        if forced is not None:
            accept(forced)
            continue
        remaining = max_tokens - len(out)
        if not policy.thinking:
            # The intervention only acts while thinking: the answer needs no alternatives, but it
            # still comes in chunks, so that a stream shows it as it is written.
            result = await complete(prompt + out, min(chunk, remaining), 0, {})
            for step in result.steps:
                accept(step.token)
            if result.finish_reason == "stop" or not result.steps:
                yield delta(result.finish_reason)
                return
            if len(out) < max_tokens:
                yield delta(None)
            continue
        result = await complete(prompt + out, min(chunk, remaining), policy.config.top_k, {})
        steps = list(result.steps)
        stopped = result.finish_reason == "stop"
        if stopped and len(steps) < min(chunk, remaining):
            # The EOS position goes through the policy too: fetch it with its alternatives. The token
            # stays the EOS the generator chose (a sampled re-draw would make stopping rarer).
            prefix = prompt + out + [s.token for s in steps]
            [tail] = (await complete(prefix, 1, policy.config.top_k, {}, ignore_eos=True)).steps
            eos = tail.token if tail.token in policy.vocab.stop_ids else policy.vocab.stop_ids[0]
            steps.append(BackendStep(eos, tail.top))
        diverged = False
        for step in steps:
            if policy.forced_token() is not None:
                diverged = True
                break
            token = step.token
            bias = policy.tag_bias([t for t, _ in step.top])
            at_tag = any(t in policy.vocab.code_of for t, _ in step.top[: policy.config.top_k])
            # A sampled tag outside the top-k still has to obey a ban (force, max_switches).
            if bias and (at_tag or token in bias):
                choice = await complete(prompt + out, 1, 0, bias, ignore_eos=True)
                token = choice.steps[0].token
            token = policy.replace(token)
            if token in policy.vocab.stop_ids:
                policy.observe(token)
                yield delta("stop")
                return
            accept(token)
            if token != step.token:
                diverged = True
                break
            if len(out) >= max_tokens:
                break
        if not diverged and stopped and not steps:
            yield delta("stop")
            return
        if sent < len(out):
            yield delta(None)
    yield delta("length")


def to_http_bias(bias: dict[int, float]) -> dict[int, float]:
    """A policy bias as an OpenAI ``logit_bias`` (``-inf`` becomes -100, values clipped to ±100)."""
    return {
        token: HTTP_BAN if math.isinf(value) else max(min(value, 100.0), HTTP_BAN)
        for token, value in bias.items()
    }


def _add_biases(first: dict[int, float], second: dict[int, float]) -> dict[int, float]:
    """Both biases, summed where they overlap (the processors add them one after the other)."""
    total = dict(first)
    for token, value in second.items():
        total[token] = total.get(token, 0.0) + value
    return total


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
        sampling: Sampling = GREEDY,
    ) -> BackendResult:
        from l2ray.decode.engine import DecodeRequest

        request = DecodeRequest(
            list(prompt_ids),
            max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed or 0,
            logit_bias=dict(logit_bias),
            logprobs=top_logprobs,
            ignore_eos=ignore_eos,
        )
        [events] = self.engine.run([request])
        steps = [BackendStep(e.token, e.top or []) for e in events if not e.is_stop]
        return BackendResult(steps, events[-1].finish_reason or "length")
