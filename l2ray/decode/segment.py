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

`SegmentLoop.stream` yields the accepted tokens as `TokenStep` groups after every generator call, the
answer's included (what streaming responses need), exactly as the serve Generator replica does: the
last step has the finish reason and the policy's counters.

Example:
    >>> loop = SegmentLoop(backend, prompt_ids, policy, max_tokens=256)  # doctest: +SKIP
    >>> groups = [group async for group in loop.stream()]  # doctest: +SKIP
    >>> groups[-1][-1].finish_reason, policy.switches, loop.calls  # doctest: +SKIP
    ('stop', 2, 9)
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from l2ray.decode.policy import RequestPolicy
from l2ray.decode.types import TokenStep

HTTP_BAN = -100.0
"""OpenAI's ``logit_bias`` floor; stands in for ``-inf`` over HTTP."""
SEED_RANGE = 2**63
"""Seeds sent to a generator stay below this (OpenAI servers take a signed 64-bit seed)."""


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
    """A generator that continues token ids (an OpenAI-compatible ``/v1/completions``).

    ``complete`` returns the generated steps (each with its top-``top_logprobs`` raw alternatives)
    and the finish reason; ``"stop"`` means the next token was an end of sequence, which is not
    among the steps.
    """

    async def complete(
        self,
        prompt_ids: list[int],
        max_tokens: int,
        top_logprobs: int,
        logit_bias: dict[int, float],
        ignore_eos: bool = False,
        sampling: Sampling = GREEDY,
    ) -> tuple[list[TokenStep], str]: ...


class SegmentLoop:
    """One request's policy replayed over an HTTP-only generator (see the module docstring).

    Args:
        backend: the generator.
        prompt_ids: the prompt.
        policy: the request's policy (its counters fill the last step's ``usage``).
        max_tokens: the most tokens to generate.
        chunk: raw tokens asked for per call.
        sampling: greedy or seeded sampling, passed on to every call.
        logit_bias: the request's own bias, added to the policy's on every call.
    """

    def __init__(
        self,
        backend: CompletionBackend,
        prompt_ids: Sequence[int],
        policy: RequestPolicy,
        max_tokens: int,
        chunk: int = 32,
        sampling: Sampling = GREEDY,
        logit_bias: dict[int, float] | None = None,
    ) -> None:
        self.backend, self.policy, self.max_tokens, self.chunk = backend, policy, max_tokens, chunk
        self.prompt = list(prompt_ids)
        self.sampling = sampling
        self.user_bias = dict(logit_bias or {})
        self.out: list[int] = []
        self.calls = 0
        """Generator calls so far."""
        self._sent = 0

    async def stream(self) -> AsyncIterator[list[TokenStep]]:
        """The tokens accepted since the previous group, after each generator call."""
        while len(self.out) < self.max_tokens:
            forced = self.policy.forced_token()
            if forced is not None:
                self._accept(forced)
                continue
            finish = await (self._thinking_chunk() if self.policy.thinking else self._answer_chunk())
            if finish is not None:
                yield self._group(finish)
                return
            if self._sent < len(self.out) < self.max_tokens:
                yield self._group(None)
        yield self._group("length")

    async def _thinking_chunk(self) -> str | None:
        """Replay the policy over a chunk of raw tokens; ``"stop"`` when the request ended."""
        for step in await self._raw_chunk():
            if self.policy.forced_token() is not None:
                return None  # the rest of the chunk is stale: continue from the new prefix
            token = self.policy.replace(await self._choose(step))
            if token in self.policy.vocab.stop_ids:
                self.policy.observe(token)
                return "stop"
            self._accept(token)
            if token != step.token or len(self.out) >= self.max_tokens:
                return None
        return None

    async def _answer_chunk(self) -> str | None:
        """The intervention only acts while thinking: the answer needs no alternatives, but it still
        comes in chunks, so that a stream shows it as it is written."""
        size = min(self.chunk, self.max_tokens - len(self.out))
        steps, finish = await self._call(size, 0, {})
        for step in steps:
            self._accept(step.token)
        return finish if finish == "stop" or not steps else None

    async def _raw_chunk(self) -> list[TokenStep]:
        """Raw (un-intervened) tokens with their alternatives, the end-of-sequence position included."""
        size, top_k = min(self.chunk, self.max_tokens - len(self.out)), self.policy.config.top_k
        steps, finish = await self._call(size, top_k, {})
        if finish == "stop" and len(steps) < size:
            # The EOS position goes through the policy too: fetch it with its alternatives. The token
            # stays the EOS the generator chose (a sampled re-draw would make stopping rarer).
            [tail], _ = await self._call(1, top_k, {}, ignore_eos=True, after=[s.token for s in steps])
            stops = self.policy.vocab.stop_ids
            steps.append(TokenStep(tail.token if tail.token in stops else stops[0], top=tail.top))
        return steps

    async def _choose(self, step: TokenStep) -> int:
        """The token at a position: the generator's, or its choice under the policy's bias there."""
        top = step.top or []
        bias = self.policy.tag_bias([t for t, _ in top])
        at_tag = any(t in self.policy.vocab.code_of for t, _ in top[: self.policy.config.top_k])
        # A sampled tag outside the top-k still has to obey a ban (force, max_switches).
        if bias and (at_tag or step.token in bias):
            [choice], _ = await self._call(1, 0, bias, ignore_eos=True)
            return choice.token
        return step.token

    async def _call(
        self, n: int, top: int, bias: dict[int, float], ignore_eos: bool = False, after: Sequence[int] = ()
    ) -> tuple[list[TokenStep], str]:
        self.calls += 1
        merged = to_http_bias(_add_biases(self.user_bias, bias))
        prefix = [*self.prompt, *self.out, *after]
        return await self.backend.complete(
            prefix, n, top, merged, ignore_eos, self.sampling.for_call(self.calls)
        )

    def _accept(self, token: int) -> None:
        self.out.append(token)
        self.policy.observe(token)

    def _group(self, finish: str | None) -> list[TokenStep]:
        """The tokens since the last group; on the last group, the finish reason and the counters."""
        steps = [TokenStep(token) for token in self.out[self._sent :]]
        self._sent = len(self.out)
        if finish is None:
            return steps
        if finish == "stop" or not steps:  # an end of sequence is a step of its own, as in the engine
            steps.append(TokenStep(self.policy.vocab.stop_ids[0], finish_reason=finish, is_stop=True))
        else:
            steps[-1].finish_reason = finish
        steps[-1].usage = self.policy.counters()
        return steps


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


__all__ = ["GREEDY", "HTTP_BAN", "CompletionBackend", "Sampling", "SegmentLoop", "to_http_bias"]
