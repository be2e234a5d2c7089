"""The OpenAI-compatible chat transport: one attempt at ``POST /chat/completions`` on a raw aiohttp
session, and the rules for whether and when to send it again. The teachers (`openai_http`) and
evaluation's HTTP engine (`l2ray.eval.engines.HttpEngine`) both send through it.

aiohttp, not the ``openai`` SDK: on these machines the SDK's default httpx transport reached 0.09 of
the teacher-bound ideal at concurrency 64, raw aiohttp 0.88 (see ``bench/synth_throughput.py``).

Timeouts are a connect timeout and an idle-read timeout (the longest silence between two chunks of a
reply), never a total: a long reasoning reply that keeps arriving is not cut. With ``stream`` the
reply comes as server-sent events (with the usage chunk), so every token resets the silence.

A failed attempt is a `Fault`, classified before anything is sent again, so no paid reply is bought
twice for nothing (`Attempts`): 429, 5xx, timeouts and dropped connections (not billed) are retried
with exponential backoff and full jitter, a ``Retry-After`` header (seconds or an HTTP date) honoured
up to ``backoff_max_s``; a reply that arrived but is unusable (malformed JSON, a stream broken after
text arrived: both paid for) is retried at most once; other 4xx statuses fail at once. The API key is
sent only in the ``Authorization`` header and scrubbed from every fault.

Example:
    >>> raw = b'{"choices": [{"message": {"content": "4"}, "finish_reason": "stop"}]}'
    >>> reply = parse_chat_completion(raw)
    >>> reply.content, reply.finish_reason
    ('4', 'stop')
    >>> attempts = Attempts(HttpClientSettings(max_retries=3, backoff_max_s=5))
    >>> attempts.after(Fault("rate_limited", "HTTP 429", retry_after=30.0))  # capped
    5.0
    >>> attempts.after(Fault("http_400", "HTTP 400: bad request", retryable=False)) is None
    True
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from l2ray.recipe import HttpClientSettings

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
PAID_FAULTS = frozenset({"empty_content", "malformed_json", "stream_broken"})
"""Faults of a reply that arrived (and is billed): worth one more try, never more."""
MAX_PAID_RETRIES = 1


@dataclass(frozen=True)
class ChatReply:
    """The first choice of a chat completion as the endpoint sent it: content and reasoning apart (a
    reasoning parser's ``reasoning_content``), why it stopped, the usage object and the model id."""

    content: str
    reasoning: str
    finish_reason: str
    usage: dict[str, Any]
    model: str


class Fault(Exception):
    """One failed attempt: ``reason`` (a short code: ``http_500``, ``rate_limited``, ``timeout``,
    ``connection``, ``malformed_json``, ``stream_broken``, …), ``detail`` (what the endpoint said),
    ``retry_after`` (seconds it asked for) and whether sending again can help (``retryable``)."""

    def __init__(
        self, reason: str, detail: str, retry_after: float | None = None, retryable: bool = True
    ) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.retry_after, self.retryable = reason, detail, retry_after, retryable

    @property
    def paid(self) -> bool:
        """A reply arrived and was billed: sending it again buys it again."""
        return self.reason in PAID_FAULTS


class Attempts:
    """The retry rules of one request: `after` each fault, how long to wait, or None to give up."""

    def __init__(self, settings: HttpClientSettings) -> None:
        self.settings = settings
        self.made = 0
        self.paid_retries = 0

    def after(self, fault: Fault) -> float | None:
        """Count the attempt that ended in ``fault``; the delay before the next, or None for none."""
        self.made += 1
        self.paid_retries += fault.paid
        if not fault.retryable or self.made > self.settings.max_retries:
            return None
        if self.paid_retries > MAX_PAID_RETRIES:
            return None
        cap = self.settings.backoff_max_s
        if fault.retry_after is not None:
            return min(fault.retry_after, cap)
        return random.uniform(0, min(cap, self.settings.backoff_base_s * 2 ** (self.made - 1)))  # full jitter


class ChatTransport:
    """``POST <base_url>/chat/completions``, one attempt a `send`, on one aiohttp session.

    Args:
        base_url: the endpoint's base URL (``…/v1``).
        settings: timeouts and ``stream``.
        api_key: sent as ``Authorization: Bearer``; scrubbed from every fault.
    """

    def __init__(self, base_url: str, settings: HttpClientSettings, api_key: str | None = None) -> None:
        self.endpoint = base_url.rstrip("/") + "/chat/completions"
        self.settings = settings
        self._api_key = api_key
        self._session: aiohttp.ClientSession | None = None

    async def send(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> ChatReply:
        """One attempt; a `Fault` (scrubbed of the key) when it fails. The caller bounds concurrency."""
        if self.settings.stream:
            body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        try:
            return await self._post(body, headers or {})
        except Fault as fault:
            raise Fault(fault.reason, self.scrub(fault.detail), fault.retry_after, fault.retryable) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    async def _post(self, body: dict[str, Any], headers: dict[str, str]) -> ChatReply:
        try:
            async with self._open().post(self.endpoint, json=body, headers=headers) as resp:
                if resp.status == 200 and body.get("stream"):
                    return await read_stream(resp, self._api_key)
                raw = await resp.read()
                if resp.status != 200:
                    raise _status_fault(resp, self.scrub(raw.decode("utf-8", "replace")))
        except asyncio.TimeoutError:
            limits = f"connect {self.settings.connect_timeout_s}s, silence {self.settings.read_timeout_s}s"
            raise Fault("timeout", f"the endpoint went quiet ({limits})") from None
        except aiohttp.ClientError as exc:
            raise Fault("connection", f"{type(exc).__name__}: {exc}") from None
        return parse_chat_completion(raw, self._api_key)

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            headers = {"Content-Type": "application/json"}
            if self._api_key:
                headers["Authorization"] = f"Bearer {self._api_key}"
            self._session = aiohttp.ClientSession(
                headers=headers,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=self.settings.connect_timeout_s,
                    sock_read=self.settings.read_timeout_s,
                ),
                # The caller bounds concurrency; the connector must not queue below it.
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            )
        return self._session


def parse_chat_completion(raw: bytes, secret: str | None = None) -> ChatReply:
    """The first choice of a whole (not streamed) chat completion; ``malformed_json`` if it is none
    (quoting the body without ``secret``)."""
    try:
        data = json.loads(raw)
        choice = data["choices"][0]
        message = choice["message"]
        content = message.get("content") or ""
        reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
        finish = str(choice.get("finish_reason") or "stop")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError, AttributeError):
        raise Fault("malformed_json", f"not a chat completion: {_quote(raw, secret)}") from None
    return _reply(content, reasoning, finish, data.get("usage"), data.get("model"))


async def read_stream(resp: aiohttp.ClientResponse, secret: str | None = None) -> ChatReply:
    """A streamed chat completion (server-sent events): the content and reasoning deltas of the first
    choice joined, its last ``finish_reason``, the usage chunk and the model. A stream that ends
    before its finish reason is ``stream_broken`` once text arrived (paid), else ``connection``."""
    content: list[str] = []
    reasoning: list[str] = []
    finish, usage, model = None, None, None
    arrived = False  # any text yet: from then on the attempt is billed
    try:
        async for line in resp.content:
            data = line.decode("utf-8", "replace").strip()
            if not data.startswith("data:"):
                continue  # blank keep-alive lines, comments, event names
            data = data[len("data:") :].strip()
            if data == "[DONE]":
                break
            chunk = _stream_chunk(data, arrived, secret)
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
        raise Fault("stream_broken", f"the stream {how} after text arrived (paid in part)") from None
    if finish is None:
        if arrived:
            raise Fault("stream_broken", "the stream ended before its finish reason (paid in part)")
        raise Fault("connection", "the stream ended before any text arrived")
    return _reply("".join(content), "".join(reasoning), str(finish), usage, model)


def _stream_chunk(data: str, paid: bool, secret: str | None) -> dict:
    """One event's JSON; an error event or garbage ends the attempt (retried once if text arrived)."""
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError:
        chunk = None
    if not isinstance(chunk, dict) or "error" in chunk:
        raise Fault("stream_broken" if paid else "malformed_json", f"the stream sent {_quote(data, secret)}")
    return chunk


def _quote(data: bytes | str, secret: str | None) -> str:
    """The start of what an endpoint sent, for an error: ``secret`` replaced *before* the cut, so no
    piece of a key survives the cut either."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return repr((text.replace(secret, "***") if secret else text)[:120])


def _reply(content: object, reasoning: object, finish: str, usage: object, model: object) -> ChatReply:
    if not isinstance(content, str) or not isinstance(reasoning, str):
        raise Fault("malformed_json", "message content is not text")
    usage = usage if isinstance(usage, dict) else {}  # a paid reply is never dropped over its usage
    return ChatReply(content, reasoning, finish, usage, model if isinstance(model, str) else "")


def _status_fault(resp: aiohttp.ClientResponse, text: str) -> Fault:
    """A non-200 answer: retryable (429, 5xx, …) with its ``Retry-After``, else final."""
    detail = f"HTTP {resp.status}: {text[:200]}"  # scrubbed before it is cut: no half key
    if resp.status not in RETRYABLE_STATUS:
        return Fault(f"http_{resp.status}", detail, retryable=False)
    reason = "rate_limited" if resp.status == 429 else f"http_{resp.status}"
    return Fault(reason, detail, _retry_after(resp.headers.get("Retry-After")))


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


__all__ = [
    "Attempts",
    "ChatReply",
    "ChatTransport",
    "Fault",
    "parse_chat_completion",
    "read_stream",
]
