"""The cached, bounded teacher a worker talks to: cache first, then at most ``concurrency`` requests.

One `TeacherClient` lives in each actor. A request is identified by its fingerprint; a cached one is
answered locally, two identical requests in flight at once are sent once, and every fresh reply is
written to the cache before the caller sees it.

Example:
    >>> import asyncio, tempfile
    >>> from l2ray.teacher.cache import CacheEntry, ResponseCache
    >>> cache = ResponseCache(tempfile.mkdtemp())
    >>> client = TeacherClient(None, cache, TeacherConfig(), prompt_version="v1")
    >>> fp = client.fingerprint([{"role": "user", "content": "hi"}])
    >>> cache.put(CacheEntry(fp, "l2ray-recorded-teacher", "hello"))
    >>> asyncio.run(client.ask([{"role": "user", "content": "hi"}])).text
    'hello'
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any

from l2ray.errors import L2rayError
from l2ray.teacher.base import Message, SamplingParams, Secret, Teacher, Usage, request_fingerprint
from l2ray.teacher.cache import CacheEntry, ResponseCache
from l2ray.teacher.config import TeacherConfig
from l2ray.teacher.ratelimit import RateLimiter


@dataclass(frozen=True)
class Answer:
    """A teacher answer as synthesis sees it: text, usage, fingerprint, whether this call sent it (not
    ``cached``), and why the teacher stopped (``"length"``: cut off at ``max_tokens``)."""

    text: str
    usage: Usage
    fingerprint: str
    cached: bool
    finish_reason: str = "stop"


class CacheMissError(L2rayError, LookupError):
    """A request that is not cached while no teacher endpoint is configured."""

    def __init__(self, fingerprint: str, meta: dict[str, Any]) -> None:
        super().__init__(
            f"no cached teacher response for request {fingerprint[:16]} ({meta}) and no teacher "
            "endpoint; set teacher.base_url (or teacher.kind=transformers) to generate it"
        )
        self.fingerprint, self.meta = fingerprint, meta


class TeacherClient:
    """Cache + teacher + a concurrency bound.

    Args:
        teacher: the model behind the cache, or ``None`` (cache only: misses raise `CacheMissError`).
        cache: where finished requests live.
        config: the teacher section (model name, sampling parameters, concurrency).
        prompt_version: part of every fingerprint; bump it when a prompt changes.
    """

    def __init__(
        self, teacher: Teacher | None, cache: ResponseCache, config: TeacherConfig, prompt_version: str
    ) -> None:
        self.teacher, self.cache, self.config = teacher, cache, config
        self.prompt_version = prompt_version
        self.params = SamplingParams.from_config(config)
        self._semaphore: asyncio.Semaphore | None = None
        self._in_flight: dict[str, asyncio.Future[Answer]] = {}

    def fingerprint(self, messages: list[Message]) -> str:
        return request_fingerprint(self.config.model, messages, self.params, self.prompt_version)

    def cached(self, messages: list[Message]) -> Answer | None:
        """The cached answer to ``messages``, without sending anything."""
        fingerprint = self.fingerprint(messages)
        entry = self.cache.get(fingerprint)
        return _answer(entry, cached=True) if entry is not None else None

    async def ask(self, messages: list[Message], meta: dict[str, Any] | None = None) -> Answer:
        """Answer ``messages`` from the cache, or from the teacher (then cache it)."""
        fingerprint = self.fingerprint(messages)
        entry = self.cache.get(fingerprint)
        if entry is not None:
            return _answer(entry, cached=True)
        if self.teacher is None:
            raise CacheMissError(fingerprint, meta or {})
        pending = self._in_flight.get(fingerprint)
        if pending is not None:  # sent (and paid for) by the first caller, not by this one
            return replace(await asyncio.shield(pending), cached=True)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._in_flight[fingerprint] = future
        try:
            answer = await self._send(messages, fingerprint, meta or {})
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: nobody else may be waiting
            raise
        finally:
            self._in_flight.pop(fingerprint, None)
        future.set_result(answer)
        return answer

    def sync(self) -> None:
        """Make the cached responses durable (fsync); call once per batch."""
        self.cache.sync()

    async def aclose(self) -> None:
        self.cache.close()
        if self.teacher is not None:
            await self.teacher.aclose()

    async def _send(self, messages: list[Message], fingerprint: str, meta: dict[str, Any]) -> Answer:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.config.concurrency)
        assert self.teacher is not None
        async with self._semaphore:
            reply = await self.teacher.complete(messages, self.params, fingerprint)
        entry = CacheEntry(
            fingerprint,
            self.config.model,
            reply.text,
            reply.usage.prompt_tokens,
            reply.usage.completion_tokens,
            meta,
            reply.finish_reason,
        )
        self.cache.put(entry)
        return _answer(entry, cached=False)


def build_teacher(
    config: TeacherConfig, rate_share: int = 1, api_key: Secret | None = None
) -> Teacher | None:
    """The teacher a config describes, or ``None`` when only the cache may answer.

    ``rate_share``: how many processes share the configured RPM/TPM limits (each gets an equal part).
    ``api_key``: the key for an HTTP teacher (default: read from the environment variable).
    """
    if config.kind == "transformers":
        from l2ray.teacher.local import TransformersTeacher

        return TransformersTeacher(config.model, device=config.device)
    if config.kind == "python":
        return _python_teacher(config)
    if not config.base_url:
        return None
    from l2ray.teacher.openai_http import OpenAITeacher

    limiter = RateLimiter(
        config.requests_per_minute / rate_share if config.requests_per_minute else None,
        config.tokens_per_minute / rate_share if config.tokens_per_minute else None,
    )
    return OpenAITeacher(config, limiter, api_key)


def _python_teacher(config: TeacherConfig) -> Teacher:
    """``teacher.factory``'s callable, called with the model name (imported by name: the teacher
    layer knows no implementation above it)."""
    import importlib

    if not config.factory:
        raise L2rayError("teacher.kind is python but teacher.factory is unset; set it to module:callable")
    module, _, name = config.factory.partition(":")
    try:
        return getattr(importlib.import_module(module), name)(config.model)
    except (ImportError, AttributeError) as exc:
        raise L2rayError(f"teacher.factory {config.factory!r} cannot be loaded: {exc}") from None


def _answer(entry: CacheEntry, cached: bool) -> Answer:
    usage = Usage(entry.prompt_tokens, entry.completion_tokens)
    return Answer(entry.text, usage, entry.fingerprint, cached, entry.finish_reason)
