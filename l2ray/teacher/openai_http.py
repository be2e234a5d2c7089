"""OpenAI-compatible ``/chat/completions`` teacher on a raw aiohttp session.

aiohttp, not the ``openai`` SDK: on these machines the SDK's default httpx transport reached 0.09 of
the teacher-bound ideal at concurrency 64, raw aiohttp 0.88 (see ``bench/synth_throughput.py``).

A failure is classified before anything is sent again, so no paid reply is bought twice for
nothing: ``finish_reason: length`` is a final answer (the caller rejects it as truncated; sending it
again would be cut at the same place), ``content_filter`` fails at once, and a reply that arrived but
is unusable (empty content with ``stop``, malformed JSON: both paid for) is retried at most once.
429, 5xx, timeouts and dropped connections (not billed) are retried with exponential backoff and
full jitter; a ``Retry-After`` header (seconds or an HTTP date) is honoured, capped at
``backoff_max_s``, and pauses the whole actor. A 429 *without* ``Retry-After`` halves the actor's
in-flight window instead (`l2ray.teacher.ratelimit.AdaptiveWindow`). Other 4xx statuses fail at once.

Timeouts are a connect timeout and an idle-read timeout (the longest silence between two chunks of a
reply), never a total: a long reasoning reply that keeps arriving is not cut. An endpoint that sends
nothing until its reply is done (OpenAI, vLLM, SGLang without streaming) is silent for the whole
generation: ``teacher.stream: true`` asks for the reply as server-sent events (with the usage chunk),
so every token resets the idle timeout and a stalled generation is told from a long one. A stream
that breaks after text arrived was paid for: it is retried at most once, like an empty reply. The API
key is sent only in the ``Authorization`` header and scrubbed from every error message.

Example:
    >>> teacher = OpenAITeacher(TeacherConfig(base_url="http://127.0.0.1:8000/v1", model="m"))
    >>> teacher.endpoint
    'http://127.0.0.1:8000/v1/chat/completions'
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from typing import Literal

import aiohttp

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
from l2ray.thinking import assistant_turn

log = logging.getLogger("l2ray.teacher")

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
PAID_FAULTS = frozenset({"empty_content", "malformed_json", "stream_broken"})
"""Faults of a reply that arrived (and is billed): worth one more try, never more."""
MAX_PAID_RETRIES = 1
FINGERPRINT_HEADER = "X-L2ray-Fingerprint"


class OpenAITeacher:
    """An OpenAI-compatible chat endpoint; one aiohttp session per instance (per actor).

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
        self.endpoint = config.base_url.rstrip("/") + "/chat/completions"
        self.limiter = limiter or RateLimiter(config.requests_per_minute, config.tokens_per_minute)
        self.window = AdaptiveWindow(config.concurrency)
        key = api_key or Secret.from_env(config.api_key_env)
        self._api_key = key.value if key else None
        self._session: aiohttp.ClientSession | None = None

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
        if self.config.stream:
            body.update(stream=True, stream_options={"include_usage": True})
        headers = {FINGERPRINT_HEADER: fingerprint} if fingerprint else {}
        prompt_estimate = estimate_tokens("".join(m["content"] for m in messages))
        paid_retries = 0
        for attempt in range(self.config.max_retries + 1):
            await self.limiter.acquire(prompt_estimate)
            try:
                reply = await self._attempt(body, headers)
            except _Retryable as exc:
                paid_retries += exc.reason in PAID_FAULTS
                failure = TeacherError(exc.reason, self._scrub(exc.detail), attempt + 1)
                if attempt == self.config.max_retries or paid_retries > MAX_PAID_RETRIES:
                    raise failure from None
                await self._wait_before_retry(attempt, exc)
                continue
            except TeacherError as exc:
                raise TeacherError(exc.reason, self._scrub(exc.detail), attempt + 1) from None
            missed = reply.usage.prompt_tokens - prompt_estimate if reply.usage.prompt_tokens else 0
            self.limiter.charge_tokens(reply.usage.completion_tokens + missed)
            return reply
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- one attempt ------------------------------------------------------------------------------

    async def _attempt(self, body: dict, headers: dict[str, str]) -> TeacherReply:
        """One request inside the adaptive window; the slot is freed before any backoff."""
        ticket = await self.window.acquire()
        outcome: Literal["ok", "overloaded", "failed"] = "failed"
        try:
            reply = await self._post(body, headers)
            outcome = "ok"
            return reply
        except _Retryable as exc:
            if exc.reason == "rate_limited" and exc.retry_after is None:
                outcome = "overloaded"
            raise
        finally:
            self.window.release(ticket, outcome)

    async def _post(self, body: dict, headers: dict[str, str]) -> TeacherReply:
        session = self._open()
        try:
            async with session.post(self.endpoint, json=body, headers=headers) as resp:
                if resp.status == 200 and body.get("stream"):
                    return await read_stream(resp)
                raw = await resp.read()
                if resp.status != 200:
                    # Scrubbed before it is cut: a key straddling the cut would leak its first half.
                    body = self._scrub(raw.decode("utf-8", "replace"))[:200]
                    detail = f"HTTP {resp.status}: {body}"
                    if resp.status in RETRYABLE_STATUS:
                        reason = "rate_limited" if resp.status == 429 else f"http_{resp.status}"
                        raise _Retryable(reason, detail, _retry_after(resp.headers.get("Retry-After")))
                    raise TeacherError(f"http_{resp.status}", detail)
        except asyncio.TimeoutError:
            limits = f"connect {self.config.connect_timeout_s}s, silence {self.config.read_timeout_s}s"
            raise _Retryable("timeout", f"the endpoint went quiet ({limits})") from None
        except aiohttp.ClientError as exc:
            raise _Retryable("connection", f"{type(exc).__name__}: {exc}") from None
        return parse_reply(raw)

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            headers = {"Content-Type": "application/json"}
            if self._api_key:
                headers["Authorization"] = f"Bearer {self._api_key}"
            self._session = aiohttp.ClientSession(
                headers=headers,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=self.config.connect_timeout_s,
                    sock_read=self.config.read_timeout_s,
                ),
                # The caller bounds concurrency; the connector must not queue below it.
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            )
        return self._session

    async def _wait_before_retry(self, attempt: int, exc: _Retryable) -> None:
        delay = self._delay(attempt, exc.retry_after)
        log.debug("teacher %s (attempt %d), retrying in %.2fs", exc.reason, attempt + 1, delay)
        if exc.reason == "rate_limited" and exc.retry_after is not None:
            self.limiter.pause(delay)  # every request of this actor waits, then this one retries
        else:
            await asyncio.sleep(delay)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        cap = self.config.backoff_max_s
        if retry_after is not None:
            return min(retry_after, cap)
        return random.uniform(0, min(cap, self.config.backoff_base_s * 2**attempt))  # full jitter

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text


class _Retryable(Exception):
    def __init__(self, reason: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.retry_after = reason, detail, retry_after


def parse_reply(raw: bytes) -> TeacherReply:
    """The text of the first choice (reasoning content folded into ``<think>``), the usage and the
    model that answered. ``finish_reason`` is read first: a cut-off reply is final even when empty."""
    try:
        data = json.loads(raw)
        choice = data["choices"][0]
        message = choice["message"]
        content = message.get("content") or ""
        reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
        finish = str(choice.get("finish_reason") or "stop")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError, AttributeError):
        raise _Retryable("malformed_json", f"not a chat completion: {raw[:120]!r}") from None
    model = data.get("model") if isinstance(data.get("model"), str) else ""
    return _reply(content, reasoning, finish, _usage(data.get("usage")), model)


async def read_stream(resp: aiohttp.ClientResponse) -> TeacherReply:
    """A streamed chat completion (server-sent events): the content and reasoning deltas of the first
    choice joined, its last ``finish_reason``, the usage chunk and the model; checked as `parse_reply`
    checks a whole reply. A stream that ends before its finish reason is ``stream_broken``."""
    content: list[str] = []
    reasoning: list[str] = []
    finish, usage, model = None, None, ""
    arrived = False  # any text yet: from then on the attempt is billed
    try:
        async for line in resp.content:
            data = line.decode("utf-8", "replace").strip()
            if not data.startswith("data:"):
                continue  # blank keep-alive lines, comments, event names
            data = data[len("data:") :].strip()
            if data == "[DONE]":
                break
            chunk = _stream_chunk(data, arrived)
            model = chunk.get("model") if isinstance(chunk.get("model"), str) else model
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or []:
                if choice.get("index", 0) != 0:
                    continue  # n is 1: another index is not this reply's
                delta = choice.get("delta") or {}
                content.append(delta.get("content") or "")
                reasoning.append(delta.get("reasoning_content") or delta.get("reasoning") or "")
                arrived = arrived or bool(content[-1] or reasoning[-1])
                finish = choice.get("finish_reason") or finish
    except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
        if not arrived:
            raise  # nothing arrived: not billed, a plain timeout or connection error
        how = "went silent" if isinstance(exc, asyncio.TimeoutError) else f"broke ({type(exc).__name__})"
        raise _Retryable("stream_broken", f"the stream {how} after text arrived (paid in part)") from None
    if finish is None:
        if arrived:
            raise _Retryable("stream_broken", "the stream ended before its finish reason (paid in part)")
        raise _Retryable("connection", "the stream ended before any text arrived")
    return _reply("".join(content), "".join(reasoning), str(finish), _usage(usage), model)


def _stream_chunk(data: str, paid: bool) -> dict:
    """One event's JSON; an error event or garbage ends the attempt (retried once if text arrived)."""
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError:
        chunk = None
    if not isinstance(chunk, dict) or "error" in chunk:
        reason = "stream_broken" if paid else "malformed_json"
        raise _Retryable(reason, f"the stream sent {data[:120]!r}")
    return chunk


def _reply(content: object, reasoning: object, finish: str, usage: Usage, model: str) -> TeacherReply:
    if not isinstance(content, str) or not isinstance(reasoning, str):
        raise _Retryable("malformed_json", "message content is not text")
    if finish == "content_filter":
        raise TeacherError("content_filter", "the endpoint filtered the reply; sending it again would too")
    if finish != "length" and not content.strip():
        raise _Retryable("empty_content", "the reply has no content")
    text = assistant_turn(reasoning.strip(), content.strip()) if reasoning else content
    return TeacherReply(text=text, usage=usage, finish_reason=finish, model=model)


def _usage(raw: object) -> Usage:
    """Token counts of a reply; a reply that is paid for is never dropped over a malformed ``usage``."""
    counts = raw if isinstance(raw, dict) else {}

    def count(name: str) -> int:
        value = counts.get(name)
        return int(value) if isinstance(value, int | float) and value >= 0 else 0

    return Usage(count("prompt_tokens"), count("completion_tokens"))


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)
