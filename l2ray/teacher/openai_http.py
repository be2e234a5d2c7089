"""OpenAI-compatible ``/chat/completions`` teacher on the shared chat transport
(`l2ray.teacher.transport`: raw aiohttp, connect + idle-read timeouts, streaming, faults classified
before anything is sent again).

What a teacher adds: ``finish_reason: length`` is a final answer (the caller rejects it as truncated;
sending it again would be cut at the same place), ``content_filter`` fails at once, and a reply that
arrived with no content (billed) is retried at most once, like the transport's other paid faults. A
429 with ``Retry-After`` pauses the whole actor (`RateLimiter.pause`); a 429 *without* it halves the
actor's in-flight window instead (`l2ray.teacher.ratelimit.AdaptiveWindow`). RPM/TPM limits are
acquired before each attempt and corrected by the usage the endpoint reports.

Example:
    >>> teacher = OpenAITeacher(TeacherConfig(base_url="http://127.0.0.1:8000/v1", model="m"))
    >>> teacher.endpoint
    'http://127.0.0.1:8000/v1/chat/completions'
    >>> parse_reply(b'{"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]}').text
    'hi'
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from l2ray.recipe import TeacherConfig
from l2ray.teacher.base import (
    Message,
    SamplingParams,
    Secret,
    TeacherError,
    TeacherReply,
    Usage,
    estimate_tokens,
)
from l2ray.teacher.ratelimit import AdaptiveWindow, RateLimiter
from l2ray.teacher.transport import Attempts, ChatReply, ChatTransport, Fault, parse_chat_completion
from l2ray.thinking import assistant_turn

log = logging.getLogger("l2ray.teacher")

FINGERPRINT_HEADER = "X-L2ray-Fingerprint"


class OpenAITeacher:
    """An OpenAI-compatible chat endpoint; one transport (one aiohttp session) per instance (per actor).

    Args:
        config: the teacher section; ``base_url`` must be set.
        limiter: RPM/TPM limits shared by the calls of this instance (default: from ``config``).
        api_key: the key (default: read from ``$<config.api_key_env>``); none sends no header.
    """

    def __init__(
        self, config: TeacherConfig, limiter: RateLimiter | None = None, api_key: Secret | None = None
    ) -> None:
        if not config.base_url:
            raise ValueError("teacher.base_url is not set; an OpenAI-compatible teacher needs an endpoint")
        self.config = config
        self.model = config.model
        key = api_key or Secret.from_env(config.api_key_env)
        self.transport = ChatTransport(config.base_url, config, key.value if key else None)
        self.endpoint = self.transport.endpoint
        self.limiter = limiter or RateLimiter(config.requests_per_minute, config.tokens_per_minute)
        self.window = AdaptiveWindow(config.concurrency)

    async def complete(
        self, messages: list[Message], params: SamplingParams, fingerprint: str | None = None
    ) -> TeacherReply:
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
        }
        headers = {FINGERPRINT_HEADER: fingerprint} if fingerprint else {}
        prompt_estimate = estimate_tokens("".join(m["content"] for m in messages))
        attempts = Attempts(self.config)
        while True:
            await self.limiter.acquire(prompt_estimate)
            try:
                reply = await self._attempt(body, headers)
            except Fault as fault:
                delay = attempts.after(fault)
                if delay is None:
                    raise TeacherError(fault.reason, fault.detail, attempts.made) from None
                await self._wait_before_retry(attempts.made, fault, delay)
                continue
            missed = reply.usage.prompt_tokens - prompt_estimate if reply.usage.prompt_tokens else 0
            self.limiter.charge_tokens(reply.usage.completion_tokens + missed)
            return reply

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def _attempt(self, body: dict, headers: dict[str, str]) -> TeacherReply:
        """One request inside the adaptive window; the slot is freed before any backoff."""
        ticket = await self.window.acquire()
        outcome: Literal["ok", "overloaded", "failed"] = "failed"
        try:
            reply = teacher_reply(await self.transport.send(body, headers))
            outcome = "ok"
            return reply
        except Fault as fault:
            if fault.reason == "rate_limited" and fault.retry_after is None:
                outcome = "overloaded"
            raise
        finally:
            self.window.release(ticket, outcome)

    async def _wait_before_retry(self, made: int, fault: Fault, delay: float) -> None:
        log.debug("teacher %s (attempt %d), retrying in %.2fs", fault.reason, made, delay)
        if fault.reason == "rate_limited" and fault.retry_after is not None:
            self.limiter.pause(delay)  # every request of this actor waits, then this one retries
        else:
            await asyncio.sleep(delay)


def parse_reply(raw: bytes) -> TeacherReply:
    """A whole chat completion as a teacher's reply (`teacher_reply`); a `Fault` when unusable."""
    return teacher_reply(parse_chat_completion(raw))


def teacher_reply(reply: ChatReply) -> TeacherReply:
    """The text of the first choice (reasoning content folded into ``<think>``), the usage and the
    model that answered. ``finish_reason`` is read first: a cut-off reply is final even when empty."""
    if reply.finish_reason == "content_filter":
        detail = "the endpoint filtered the reply; sending it again would too"
        raise Fault("content_filter", detail, retryable=False)
    if reply.finish_reason != "length" and not reply.content.strip():
        raise Fault("empty_content", "the reply has no content")
    content, reasoning = reply.content, reply.reasoning
    text = assistant_turn(reasoning.strip(), content.strip()) if reasoning else content
    return TeacherReply(
        text=text, usage=_usage(reply.usage), finish_reason=reply.finish_reason, model=reply.model
    )


def _usage(counts: dict) -> Usage:
    """Token counts of a reply; a reply that is paid for is never dropped over a malformed ``usage``."""

    def count(name: str) -> int:
        value = counts.get(name)
        return int(value) if isinstance(value, int | float) and value >= 0 else 0

    return Usage(count("prompt_tokens"), count("completion_tokens"))
