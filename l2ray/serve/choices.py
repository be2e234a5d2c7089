"""One choice of a response as its tokens arrive: text deltas, the thinking/answer split, ``stop``.

Example:
    >>> plan = Plan(0, DecodeRequest([1, 2], max_tokens=8), thinking=True)  # doctest: +SKIP
    >>> choice = new_choice("chat", plan, codec)  # doctest: +SKIP
    >>> choice.add(TokenStep(42))  # doctest: +SKIP
    ('<|lang:en|>', '')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from l2ray.decode.codec import Codec
from l2ray.decode.detok import IncrementalDecoder, StopStrings, ThinkingSplitter
from l2ray.decode.policy import RequestPolicy
from l2ray.decode.types import DecodeRequest, TokenStep
from l2ray.thinking import split_thinking


@dataclass
class Plan:
    """One choice of a request, ready to decode."""

    index: int
    request: DecodeRequest
    thinking: bool
    stop: list[str] = field(default_factory=list)


@dataclass
class ChoiceText:
    """The text, logprobs and counters of one choice as its tokens arrive.

    ``stops`` cut the content (the answer, or the whole text of a raw completion) before the first
    stop string; thinking is never cut, so a stop string cannot end a response before its answer.
    Once one is found the choice is finished (``finish_reason`` ``"stop"``) and ``replay``, a fresh
    policy that has observed every token, supplies the counters the generator never got to send. A
    choice that began inside ``<think>`` (``opened``) and ended without closing it has no answer: its
    ``finish_reason`` is ``"length"``, whatever ended it, so a client can tell "answered nothing" from
    "never finished thinking".
    """

    index: int
    decoder: IncrementalDecoder
    splitter: ThinkingSplitter | None
    stops: StopStrings | None = None
    replay: RequestPolicy | None = None
    opened: bool = True
    reasoning: str = ""
    content: str = ""
    tokens: list[int] = field(default_factory=list)
    logprobs: list[TokenStep] = field(default_factory=list)
    finish_reason: str | None = None
    counters: dict[str, Any] = field(default_factory=dict)

    def add(self, step: TokenStep) -> tuple[str, str]:
        """Take one step; return its ``(reasoning, content)`` text deltas."""
        delta = "" if step.is_stop else self._push(step)
        last = step.finish_reason is not None
        if last:
            delta += self.decoder.flush()
        reasoning, content = self.splitter.feed(delta) if self.splitter else ("", delta)
        if last and self.splitter:
            tail_reasoning, tail_content = self.splitter.finish()
            reasoning, content = reasoning + tail_reasoning, content + tail_content
        if self.stops is not None:
            content = self.stops.feed(content)
            content += "" if self.stops.hit or not last else self.stops.flush()
        if self.stops is not None and self.stops.hit:
            self.finish_reason = "stop"
            self.counters = self.replay.counters() if self.replay is not None else step.usage
        elif last:
            self.counters = step.usage
            never_closed = self.opened and not self.counters.get("answer_tokens", 1)
            self.finish_reason = "length" if never_closed else step.finish_reason
        self.reasoning += reasoning
        self.content += content
        return reasoning, content

    def thinking_text(self) -> str:
        """The thinking written: apart in a chat; before ``</think>`` in a raw completion's text."""
        if self.splitter is not None:
            return self.reasoning
        return split_thinking(self.content, opened=self.opened)[0]

    def _push(self, step: TokenStep) -> str:
        self.tokens.append(step.token)
        self.logprobs.append(step)
        if self.replay is not None:
            self.replay.observe(step.token)
        return self.decoder.push([step.token])


def new_choice(kind: str, plan: Plan, codec: Codec) -> ChoiceText:
    """The empty `ChoiceText` of a plan (chat splits thinking from the answer; raw completions do not)."""
    splitter = ThinkingSplitter(plan.thinking) if kind == "chat" else None
    stops = StopStrings(plan.stop) if plan.stop else None
    replay = codec.policy(plan.request) if plan.stop else None
    return ChoiceText(plan.index, IncrementalDecoder(codec.tokenizer), splitter, stops, replay, plan.thinking)


__all__ = ["ChoiceText", "Plan", "new_choice"]
