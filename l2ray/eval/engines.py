"""What evaluation generates with: an in-process model (transformers or vLLM) or an OpenAI-compatible
HTTP endpoint.

Both take `SampleRequest`s and return one `Completion` per request, in order. A request that fails
(HTTP 5xx after retries, a timeout, a malformed body) becomes a `Completion` with ``error`` set: the
report counts failures instead of dropping them. Only an endpoint that cannot be reached at all, or that
does not say which model to ask for, is an error for the whole run (`check_endpoint`, `served_model_id`).

Both engines mark a generation that began inside ``<think>`` (``Completion.starts_in_thinking``): the
in-process prompt of a reasoning student opens the block (`Codec.chat_prompt`), and a server that
returns the reasoning apart has opened it.
Grading then gives such a generation no answer unless its thinking closed, the same on either engine.

Over HTTP the intervention travels as ``{"l2ray": {<InterventionConfig fields>, "show_thinking": true}}``
in the request body (l2ray's own server reads it; set ``eval.l2ray_body`` off for servers that reject
unknown fields).

Example:
    >>> req = SampleRequest("k", [{"role": "user", "content": "1+1?"}], InterventionConfig(), 16, 0.0, 0)
    >>> body = chat_body(req, "student", l2ray_body=True)
    >>> body["l2ray"]["show_thinking"], body["max_tokens"]
    (True, 16)
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, replace
from typing import Any

from l2ray.decode.types import Completion, DecodeRequest
from l2ray.errors import L2rayError
from l2ray.recipe import EvalConfig, HttpClientSettings, InterventionConfig
from l2ray.teacher.transport import Attempts, ChatReply, ChatTransport, Fault
from l2ray.thinking import THINK_END


@dataclass
class SampleRequest:
    """One sample to generate: a conversation under one intervention."""

    key: str
    messages: list[dict[str, str]]
    intervention: InterventionConfig
    max_tokens: int
    temperature: float
    seed: int


class EndpointError(L2rayError, RuntimeError):
    """The endpoint cannot be reached at all (refused, DNS, wrong base URL)."""


def chat_body(request: SampleRequest, served_model: str, l2ray_body: bool) -> dict[str, Any]:
    """The JSON body of ``POST /chat/completions`` for one request."""
    body: dict[str, Any] = {
        "model": served_model,
        "messages": request.messages,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "seed": request.seed,
    }
    if l2ray_body:
        body["l2ray"] = {**request.intervention.model_dump(), "show_thinking": True}
    return body


class LocalEngine:
    """In-process generation on `l2ray.decode.engine.DecodeEngine`.

    Every request samples with its own ``seed`` (the decode engine keeps one RNG per row), so its
    generation does not depend on which requests share its batch or where it sits in it. Requests are
    decoded in one batch per (intervention, max_tokens, temperature): an intervention the model cannot
    carry out then fails its own requests only.
    """

    kind = "local"

    def __init__(self, model_path: str, device: str | None = None, tracking_uri: str | None = None) -> None:
        from l2ray.decode.engine import DecodeEngine

        self.engine = DecodeEngine.load(model_path, tracking_uri=tracking_uri, device=device)

    def generate(self, requests: list[SampleRequest]) -> list[Completion]:
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            key = json.dumps([request.intervention.model_dump(), request.max_tokens, request.temperature])
            groups.setdefault(key, []).append(index)
        results: list[Completion | None] = [None] * len(requests)
        for indices in groups.values():
            start = time.perf_counter()
            try:
                completions = self._complete([requests[i] for i in indices])
            except Exception as exc:  # a failing batch is counted per sample, not fatal for the run
                for i in indices:
                    results[i] = Completion(None, error=f"{type(exc).__name__}: {exc}")
                continue
            latency = (time.perf_counter() - start) / max(len(indices), 1)
            for i, completion in zip(indices, completions, strict=True):
                results[i] = replace(completion, latency_s=latency)
        return [r if r is not None else Completion(None, error="no result") for r in results]

    def _complete(self, requests: list[SampleRequest]) -> list[Completion]:
        """Decode ``requests`` as one batch, each row with its request's own seed."""
        codec = self.engine.codec
        return self.engine.complete(
            [
                DecodeRequest(
                    codec.chat_prompt(r.messages),
                    max_tokens=r.max_tokens,
                    intervention=r.intervention,
                    temperature=r.temperature,
                    seed=r.seed,
                )
                for r in requests
            ]
        )


class ContextError(L2rayError, ValueError):
    """A sample whose prompt plus ``max_tokens`` does not fit the model's context."""


def check_context(key: str, prompt_tokens: int, max_tokens: int, context: int) -> None:
    """Refuse, before any generation, a sample that cannot fit: a run must not record it as a
    short answer or a failed sample."""
    if prompt_tokens + max_tokens > context:
        raise ContextError(
            f"sample {key}: prompt ({prompt_tokens} tokens) + eval.max_tokens ({max_tokens}) exceeds the "
            f"model's context of {context}; lower eval.max_tokens to at most {context - prompt_tokens}"
        )


class EngineFailedError(L2rayError, RuntimeError):
    """The in-process engine itself failed (its process died, out of memory): the run stops, since
    samples recorded as failed would measure the machine, not the model."""


ENGINE_FAILURE_FIX = (
    "the run stops without a report. If it ran out of memory, lower eval.vllm.max_num_seqs, "
    "eval.max_tokens or eval.vllm.gpu_memory_utilization (on CPU: eval.vllm.cpu_kv_cache_gib), or raise "
    "eval.vllm.tensor_parallel_size; if its process was killed, see the engine's log above (the kernel's "
    "OOM killer, a lost GPU), then rerun"
)


class VllmLocalEngine:
    """In-process generation on vLLM (`l2ray.decode.vllm_engine.VllmEngine`): one continuous batch per
    call, the intervention as vLLM's logits processor, each request with its own ``seed``.

    Unlike `LocalEngine`, an engine failure (out of memory, a dead engine process) is raised as
    `EngineFailedError` and fails the run — it says nothing about the model's accuracy. Only an
    intervention the model cannot carry out fails its own samples (``Completion.error``). Every
    sample's ``prompt + max_tokens`` is checked against the context before anything is generated
    (`ContextError`).
    """

    kind = "vllm"

    def __init__(self, model_path: str, engine: dict[str, Any] | None = None) -> None:
        from l2ray.decode.vllm_engine import VllmEngine
        from l2ray.recipe import VllmEngineConfig

        self.engine = VllmEngine(model_path, VllmEngineConfig.model_validate(engine or {}))

    @classmethod
    def over(cls, engine: Any) -> VllmLocalEngine:
        """An evaluation engine over an already started `VllmEngine` (tests share one per session)."""
        self = cls.__new__(cls)
        self.engine = engine
        return self

    def generate(self, requests: list[SampleRequest]) -> list[Completion]:
        from l2ray.decode.spec import PolicyError

        codec = self.engine.codec
        decode = [
            DecodeRequest(
                codec.chat_prompt(r.messages), r.max_tokens, r.intervention, r.temperature, seed=r.seed
            )
            for r in requests
        ]
        for request, row in zip(requests, decode, strict=True):
            check_context(request.key, len(row.prompt_ids), request.max_tokens, codec.context_length)
        results: list[Completion | None] = [None] * len(requests)
        runnable = []
        for index, row in enumerate(decode):
            try:
                codec.spec(row)
                runnable.append(index)
            except PolicyError as exc:
                results[index] = Completion(None, error=f"PolicyError: {exc}")
        done = self._complete([decode[i] for i in runnable]) if runnable else []
        for index, completion in zip(runnable, done, strict=True):
            results[index] = completion
        return [r if r is not None else Completion(None, error="no result") for r in results]

    def _complete(self, decode: list[DecodeRequest]) -> list[Completion]:
        """``decode`` on the engine; an engine that dies or runs out of memory is `EngineFailedError`."""
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            return self.engine.complete(decode)
        except (EngineDeadError, RuntimeError, MemoryError) as exc:  # torch's OOM is a RuntimeError
            raise EngineFailedError(
                f"model {self.engine.model_path}: the vLLM engine failed while generating "
                f"{len(decode)} samples ({type(exc).__name__}: {exc}); {ENGINE_FAILURE_FIX}"
            ) from None


class HttpEngine:
    """An OpenAI-compatible ``/chat/completions`` endpoint on the teachers' transport
    (`l2ray.teacher.transport`), ``concurrency`` requests in flight.

    Waits and retries as ``settings`` say (`l2ray.recipe.HttpClientSettings`, the eval section's):
    connect + idle-read timeouts, never a total, so a long generation that keeps arriving is not cut
    (``stream: true`` makes every token count as arriving); 429/5xx, timeouts and dropped connections
    retried with backoff and ``Retry-After``; a reply that arrived but is malformed retried once (it
    was generated, and on a paid endpoint billed); other 4xx not at all. A request that still fails
    becomes a `Completion` with ``error`` (what the endpoint said, the reason code and the attempts).
    """

    kind = "http"

    def __init__(
        self,
        base_url: str,
        served_model: str,
        api_key: str | None = None,
        concurrency: int = 8,
        settings: HttpClientSettings | dict[str, Any] | None = None,
        l2ray_body: bool = True,
    ) -> None:
        # Without settings, the eval section's defaults (the one place they are written).
        self.settings = HttpClientSettings.model_validate(settings or EvalConfig().http_settings())
        self.transport = ChatTransport(base_url, self.settings, api_key)
        self.served_model = served_model
        self.concurrency = concurrency
        self.l2ray_body = l2ray_body
        self._semaphore: asyncio.Semaphore | None = None

    async def agenerate(self, requests: list[SampleRequest]) -> list[Completion]:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.concurrency)
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    async def aclose(self) -> None:
        await self.transport.aclose()

    def generate(self, requests: list[SampleRequest]) -> list[Completion]:
        """Synchronous wrapper (own event loop); inside Ray the async `agenerate` is used."""

        async def run() -> list[Completion]:
            try:
                return await self.agenerate(requests)
            finally:
                await self.aclose()
                self._semaphore = None

        return asyncio.run(run())

    async def _one(self, request: SampleRequest) -> Completion:
        assert self._semaphore is not None
        body = chat_body(request, self.served_model, self.l2ray_body)
        attempts = Attempts(self.settings)
        async with self._semaphore:
            while True:
                start = time.perf_counter()
                try:
                    return completion_of(await self.transport.send(body), time.perf_counter() - start)
                except Fault as fault:
                    delay = attempts.after(fault)
                    if delay is None:
                        attempt = f"{fault.reason} after {attempts.made} attempt(s)"
                        return Completion(None, error=f"{fault.detail} [{attempt}]")
                await asyncio.sleep(delay)


def completion_of(reply: ChatReply, latency: float) -> Completion:
    """A chat reply as evaluation's `Completion`. Servers that split the reasoning out (vLLM's
    reasoning parsers, l2ray's own) have opened the thinking: it is joined back before the content.
    No content then means the model stopped inside the thinking (cut off, or an end token
    mid-thought): it stays unclosed and is graded as no answer, as the in-process engine grades it."""
    content = reply.content
    if reply.reasoning and THINK_END not in content:
        content = f"{reply.reasoning}{THINK_END}\n\n{content}" if content.strip() else reply.reasoning
    return Completion(
        content,
        reply.finish_reason,
        reply.usage,
        latency_s=latency,
        starts_in_thinking=bool(reply.reasoning),
    )


def check_endpoint(base_url: str, api_key: str | None = None, timeout_s: float = 10.0) -> None:
    """Raise `EndpointError` when nothing answers at ``base_url`` (any HTTP status counts as reachable)."""
    _get_models(base_url, api_key, timeout_s)


def served_model_id(
    base_url: str, api_key: str | None = None, prefer: str | None = None, timeout_s: float = 10.0
) -> str:
    """The ``model`` to send to ``base_url``, read from its ``GET /models``.

    ``prefer`` (the evaluated model's URI) when the endpoint lists it, else the one id it lists. An
    l2ray server lists only its ``served_model_name`` and refuses other names with 404, so sending a
    registry URI such as ``models:/NAME/3`` would fail every request.

    Raises:
        EndpointError: unreachable; ``/models`` does not answer a model list (e.g. HTTP 401); or it lists
            no model, or several without ``prefer`` — set ``eval.served_model`` then.
    """
    response = _get_models(base_url, api_key, timeout_s)
    url = base_url.rstrip("/") + "/models"
    try:
        ids = [str(card["id"]) for card in response.json()["data"]] if response.status_code == 200 else None
    except (ValueError, KeyError, TypeError):
        ids = None
    if ids is None:
        hint = " (check eval.api_key_env)" if response.status_code in (401, 403) else ""
        raise EndpointError(
            f"{url} answered HTTP {response.status_code}, not a model list{hint}: "
            f"{response.text[:200]!r}; set eval.served_model to the model name the endpoint serves"
        )
    if prefer is not None and prefer in ids:
        return prefer
    if len(ids) == 1:
        return ids[0]
    served = ", ".join(repr(i) for i in ids) or "none"
    raise EndpointError(
        f"{url} lists {len(ids)} models ({served}), so which one to evaluate is ambiguous; "
        "set eval.served_model to one of them"
    )


def _get_models(base_url: str, api_key: str | None, timeout_s: float) -> Any:
    """``GET <base_url>/models``; `EndpointError` when nothing answers."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        return httpx.get(base_url.rstrip("/") + "/models", headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise EndpointError(
            f"endpoint {base_url} is unreachable ({type(exc).__name__}: {exc}); start the server "
            "(l2ray serve) or fix eval.endpoint"
        ) from None


__all__ = [
    "ContextError",
    "EndpointError",
    "EngineFailedError",
    "HttpEngine",
    "LocalEngine",
    "SampleRequest",
    "VllmLocalEngine",
    "chat_body",
    "check_endpoint",
    "served_model_id",
]
