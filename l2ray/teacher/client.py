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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from l2ray.errors import L2rayError
from l2ray.recipe import ROLES, Role, TeacherConfig
from l2ray.teacher.base import (
    Message,
    SamplingParams,
    Secret,
    Teacher,
    TeacherError,
    Usage,
    request_fingerprint,
)
from l2ray.teacher.cache import CacheEntry, ResponseCache
from l2ray.teacher.prices import price_of
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
    served_model: str = ""  # the model id the endpoint named in its reply ("" if it named none)


BUDGET_REASON = "budget"


@dataclass(frozen=True)
class BudgetSoFar:
    """What a section's ``max_cost_usd`` went to this run before the pipeline (the batch stage):
    dollars spent, and the requests left unsent because they would pass it."""

    spent_usd: float = 0.0
    held_back: frozenset[str] = frozenset()

    @classmethod
    def merged(cls, parts: Iterable[BudgetSoFar]) -> BudgetSoFar:
        """One budget's account from its roles' (a section serving both roles has one budget)."""
        parts = list(parts)
        return cls(sum(p.spent_usd for p in parts), frozenset().union(*(p.held_back for p in parts)))


class CacheMissError(L2rayError, LookupError):
    """A request that is not cached while no teacher endpoint is configured."""

    def __init__(self, fingerprint: str, meta: dict[str, Any], batch: bool = False) -> None:
        fix = (
            "the batch API did not answer it (see summary.json: batch); run again to submit it again"
            if batch
            else "no teacher endpoint; set teacher.base_url (or teacher.kind=transformers) to generate it"
        )
        super().__init__(f"no cached teacher response for request {fingerprint[:16]} ({meta}): {fix}")
        self.fingerprint, self.meta = fingerprint, meta


class TeacherClient:
    """Cache + teacher + a concurrency bound + a spending limit.

    Args:
        teacher: the model behind the cache, or ``None`` (cache only: misses raise `CacheMissError`).
        cache: where finished requests live.
        config: the teacher section (model name, sampling parameters, concurrency, prices, budget).
        prompt_version: part of every fingerprint; bump it when a prompt changes.
        budget_share: how many clients share ``config.max_cost_usd`` (each may spend an equal part).
        so_far: the batch stage's account of the budget: its spend counts against this client's
            share, and a miss among its held-back requests is ``TeacherError("budget")``, not
            `CacheMissError`.
    """

    def __init__(
        self,
        teacher: Teacher | None,
        cache: ResponseCache,
        config: TeacherConfig,
        prompt_version: str,
        budget_share: int = 1,
        so_far: BudgetSoFar = BudgetSoFar(),
    ) -> None:
        self.teacher, self.cache, self.config = teacher, cache, config
        self.prompt_version = prompt_version
        self.params = SamplingParams.from_config(config)
        self.price = price_of(config)
        self.budget_usd = config.max_cost_usd / budget_share if config.max_cost_usd else None
        self.spent_usd = so_far.spent_usd / budget_share
        self.held_back = so_far.held_back
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
            if fingerprint in self.held_back:
                raise TeacherError(
                    BUDGET_REASON,
                    f"{self.config.model}: request {fingerprint[:16]} was held back from the batch API, "
                    f"where it would have passed max_cost_usd={self.config.max_cost_usd}; raise it and run "
                    "again to resume (collected replies are cached)",
                )
            raise CacheMissError(fingerprint, meta or {}, self.config.batch)
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
            self._check_budget()  # here, not before the wait: the spend may have grown meanwhile
            reply = await self.teacher.complete(messages, self.params, fingerprint)
        self.spent_usd += self.price.cost(reply.usage.prompt_tokens, reply.usage.completion_tokens)
        entry = CacheEntry(
            fingerprint,
            self.config.model,
            reply.text,
            reply.usage.prompt_tokens,
            reply.usage.completion_tokens,
            meta,
            reply.finish_reason,
            reply.model,
        )
        self.cache.put(entry)
        return _answer(entry, cached=False)

    def _check_budget(self) -> None:
        if self.budget_usd is not None and self.spent_usd >= self.budget_usd:
            raise TeacherError(
                BUDGET_REASON,
                f"{self.config.model}: spent ${self.spent_usd:.4f} of this actor's ${self.budget_usd:.4f} "
                "share of max_cost_usd; raise max_cost_usd and run again to resume (replies are cached)",
            )


def build_teacher(
    config: TeacherConfig, rate_share: int = 1, api_key: Secret | None = None
) -> Teacher | None:
    """The teacher a config describes, or ``None`` when only the cache may answer.

    ``rate_share``: how many processes share the configured RPM/TPM limits (each gets an equal part).
    ``api_key``: the key for an HTTP teacher (default: read from the environment variable).
    """
    if config.kind == "vllm":
        from l2ray.teacher.vllm import VllmTeacher

        return VllmTeacher(config.model, seed=config.seed, engine=config.vllm.model_dump())
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


@dataclass(frozen=True)
class RoleSetup:
    """What one role's client is built from (plain data: it travels to every synthesis actor).

    Args:
        config: the role's teacher section.
        cache_dir: its response cache folder.
        api_key: the driver's key for it (actors do not inherit the driver's environment; default:
            read from the section's variable where the client is built).
        so_far: the batch stage's account of its budget (see `TeacherClient`).
    """

    config: TeacherConfig
    cache_dir: str
    api_key: Secret | None = None
    so_far: BudgetSoFar = BudgetSoFar()


class RoleClients:
    """The client of each role. A single ``teacher:`` section serving both roles gets one client
    (one cache, one limiter, one budget), as before roles existed.

    Args:
        setups: role → what its client is built from.
        prompt_version: ``synth.prompt_version``.
        share: how many actors share each role's RPM/TPM limits and budget.
        recorded: entries served from memory by every role's cache, never written.
        build: build the teachers (``False``: cache-only clients, to look up what is cached).
    """

    def __init__(
        self,
        setups: Mapping[Role, RoleSetup],
        prompt_version: str,
        share: int = 1,
        recorded: Sequence[CacheEntry] = (),
        build: bool = True,
    ) -> None:
        self.by_role: dict[Role, TeacherClient] = {}
        for role in ROLES:
            setup = setups[role]
            # Roles with equal sections and caches share one client: one budget and its account.
            section = [r for r in ROLES if _same_client(setups[r], setup)]
            if section[0] in self.by_role:
                self.by_role[role] = self.by_role[section[0]]
                continue
            # A batch role's replies come from the batch API before the pipeline runs: its actors
            # only read the cache, and a line that failed in the batch stays a miss.
            live = build and not setup.config.batch
            teacher = build_teacher(setup.config, share, setup.api_key) if live else None
            cache = ResponseCache(setup.cache_dir, preload=recorded)
            account = BudgetSoFar.merged(setups[r].so_far for r in section)
            self.by_role[role] = TeacherClient(teacher, cache, setup.config, prompt_version, share, account)

    @property
    def translator(self) -> TeacherClient:
        return self.by_role["translator"]

    @property
    def reasoner(self) -> TeacherClient:
        return self.by_role["reasoner"]

    def distinct(self) -> list[TeacherClient]:
        return list({id(c): c for c in self.by_role.values()}.values())

    def sync(self) -> None:
        for client in self.distinct():
            client.sync()

    async def aclose(self) -> None:
        for client in self.distinct():
            await client.aclose()


def _same_client(one: RoleSetup, other: RoleSetup) -> bool:
    return (one.config, one.cache_dir) == (other.config, other.cache_dir)


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
    return Answer(entry.text, usage, entry.fingerprint, cached, entry.finish_reason, entry.served_model)
