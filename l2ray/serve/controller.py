"""The reasoning controller: a validated request → policies → tokens → an OpenAI response.

It lives inside each Ingress replica (an object, not a deployment of its own): a request crosses one
process boundary between the HTTP front door and the model, as in Ray Serve LLM (proxy → ingress →
LLM server). As a deployment between the two it cost every token a second hop — about a fifth of a
core under load on 2 cores, taken from the engine (bench/serve_engine.py's CPU accounting). In the
direct graph (``serve.graph: direct``) the generator lives in that process too, and no token crosses
a process boundary before the HTTP proxy (`l2ray.serve.links`).

It also answers for the Generator's health as a client sees it: a request that finds no replica
ready (the model loading, a replica being replaced) gets a 503 with ``Retry-After`` at once, after a
short probe (`READY_PROBE_S`), instead of waiting in a queue for minutes; a replica lost mid-request
is a 503 too (a stream ends with that error event), never a 500 naming Ray's exceptions.

With a model link (`l2ray.serve.links`: a Generator deployment's handle, or the generator in this
very process) the policy runs inside the replica's logits processors; with
``generator_url`` the controller drives an HTTP-only generator through the segment loop. Either way
it tokenizes, checks the context, splits thinking from answer and applies ``stop`` strings to the
answer (`l2ray.serve.choices`, stopping the generator early), and builds the bodies
(`l2ray.serve.responses`). Requests arrive validated: the ingress parses them once
(`l2ray.serve.protocol`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from l2ray.decode.codec import Codec
from l2ray.decode.policy import opens_thinking
from l2ray.decode.segment import Sampling, SegmentLoop
from l2ray.decode.spec import PolicyError
from l2ray.decode.types import DecodeRequest, TokenStep
from l2ray.recipe import ServeConfig
from l2ray.serve.backends import OpenAICompletionsBackend
from l2ray.serve.choices import ChoiceText, Plan, new_choice
from l2ray.serve.links import ModelLink
from l2ray.serve.protocol import ModelLost, OpenAIRequest, RequestError, unavailable
from l2ray.serve.responses import choice_body, delta_body, envelope, usage_body

READY_PROBE_S = 2.0
"""How long a request (or ``/readyz``) waits for a Generator replica to answer before it is told 503."""
REPLICA_LOST = (
    RayActorError,
    ActorUnavailableError,
    BackPressureError,
    DeploymentUnavailableError,
    ModelLost,
)
"""What a model call raises when its replica (or its engine) died, is being replaced, or its queue is
full."""
logger = logging.getLogger("ray.serve")


class ReasoningController:
    """Turns validated OpenAI requests into policies and decodes them (see the module doc)."""

    def __init__(self, model: ModelLink | None, config: ServeConfig) -> None:
        self.config = config
        self.model = model
        self.backend = None
        if self.config.generator_url:
            key_env = self.config.generator_api_key_env
            self.backend = OpenAICompletionsBackend(
                self.config.generator_url,
                self.config.served_model_name,
                api_key=os.environ.get(key_env) if key_env else None,
            )
        self._codec: Codec | None = None
        self._lock = asyncio.Lock()
        self._ready = False

    async def readiness(self) -> tuple[int, dict[str, Any]]:
        """What ``/readyz`` answers: 200 when a Generator replica answers now (its engine has produced
        a token), else a 503 body."""
        try:
            found = await self._probe()
        except RequestError as exc:
            return exc.status, exc.body()
        return 200, {"status": "ready", **found}

    async def respond(self, request: OpenAIRequest) -> tuple[int, dict[str, Any]]:
        """A whole (non-streamed) response: ``(status, body)``."""
        try:
            plans = await self._plan(request)
            choices = await asyncio.gather(*(self._collect(request.kind, plan) for plan in plans))
        except RequestError as exc:
            return exc.status, exc.body()
        except REPLICA_LOST as exc:
            error = self._lost(exc)
            return error.status, error.body()
        body = envelope(request.kind, self.config.served_model_name, streamed=False)
        body["choices"] = [choice_body(c, request, self._codec) for c in choices]
        body["usage"] = usage_body(len(plans[0].request.prompt_ids), choices)
        return 200, body

    async def stream(self, request: OpenAIRequest) -> AsyncIterator[dict[str, Any]]:
        """Stream a response: first ``{"status": …}`` (with ``body`` on error), then SSE chunk bodies —
        every choice's deltas as they come, each chunk naming its choice by ``index``; a replica lost
        mid-stream ends it with a 503 error body (the ingress sends ``[DONE]`` after it)."""
        try:
            plans = await self._plan(request)
        except RequestError as exc:
            yield {"status": exc.status, "body": exc.body()}
            return
        except REPLICA_LOST as exc:
            yield {"status": 503, "body": self._lost(exc).body()}
            return
        yield {"status": 200}
        try:
            async for chunk in self._chunks(request, plans):
                yield chunk
        except REPLICA_LOST as exc:
            yield self._lost(exc).body()

    async def _chunks(self, request: OpenAIRequest, plans: list[Plan]) -> AsyncIterator[dict[str, Any]]:
        """The chunk bodies of a stream: the role deltas, each group's delta, then the usage chunk."""
        kind = request.kind
        head = envelope(kind, self.config.served_model_name, streamed=True)
        choices = [new_choice(kind, plan, self._codec) for plan in plans]
        if kind == "chat":
            for choice in choices:
                yield {
                    **head,
                    "choices": [{"index": choice.index, "delta": {"role": "assistant", "content": ""}}],
                }
        async with aclosing(_merged([self._groups(plan) for plan in plans])) as groups:
            async for index, group in groups:  # one chunk a group: the replica's stream interval carries over
                chunk = _chunk(head, request, choices, index, group, len(plans[0].request.prompt_ids))
                if chunk is not None:
                    yield chunk
                if all(c.finish_reason is not None for c in choices):
                    break
        usage = usage_body(len(plans[0].request.prompt_ids), choices)
        if request.stream_options is not None and request.stream_options.include_usage:
            yield {**head, "choices": [], "usage": usage}

    # -- planning ----------------------------------------------------------------------------------

    async def _plan(self, request: OpenAIRequest) -> list[Plan]:
        if not self._ready:
            await self._probe()
        codec = await self._codec_ready()
        prompt = _prompt_ids(request, codec)
        limit = _token_limit(request, len(prompt), codec.context_length, self.config.max_tokens_limit)
        bias = _logit_bias(request, len(codec.tokenizer))
        self._check_generator_url(request)
        # Without a seed every request samples differently (and draws its own intervention choices);
        # with one it is reproducible. Choice i uses seed + i either way.
        seed = request.seed if request.seed is not None else secrets.randbits(63)
        sampling = {k: v if v is not None else codec.sampling[k] for k, v in request.sampling().items()}
        requests = [
            DecodeRequest(
                prompt,
                limit,
                request.l2ray.intervention(),
                temperature=sampling["temperature"],
                top_p=sampling["top_p"],
                seed=seed + index,
                logit_bias=bias,
                logprobs=request.top_logprobs_wanted() or 0,
                ignore_eos=request.ignores_eos,
            )
            for index in range(request.n)
        ]
        try:
            for decode_request in requests:  # checked once here; the spec travels with the request
                codec.spec(decode_request)
        except PolicyError as exc:
            raise RequestError(400, f"l2ray: {exc}", "l2ray") from None
        thinking = opens_thinking(prompt, codec.vocab)
        if not thinking and request.l2ray.intervention().active:
            raise RequestError(
                400,
                "l2ray: the intervention acts on the thinking, and this prompt does not end inside "
                "<think> (its last <think> is closed, or there is none); end the prompt with <think>, "
                "ask through /v1/chat/completions, or leave the l2ray options out",
                "l2ray",
            )
        return [Plan(i, r, thinking, request.stop or []) for i, r in enumerate(requests)]

    async def _probe(self) -> dict[str, Any]:
        """Ask a Generator replica whether it is ready (at most `READY_PROBE_S`); 503 when none answers."""
        if self.model is None:
            self._ready = True  # an HTTP generator: its own failures are the segment loop's to report
            return {"model": self.config.model or "", "generator_url": self.config.generator_url}
        try:
            found = await asyncio.wait_for(self.model.ready(), READY_PROBE_S)
        except (TimeoutError, *REPLICA_LOST):
            self._ready = False
            raise unavailable("the model is not ready: its replica is loading or being replaced") from None
        self._ready = True
        return found

    def _lost(self, exc: Exception) -> RequestError:
        """A replica lost mid-request: logged here, a 503 for the client, and the next request probes."""
        self._ready = False
        logger.warning("a Generator replica was lost mid-request (%s); answering 503", type(exc).__name__)
        return unavailable("the model replica was lost while answering")

    def _check_generator_url(self, request: OpenAIRequest) -> None:
        """Refuse what the segment loop cannot do over HTTP (it passes sampling and logit_bias on)."""
        if self.backend is None:
            return
        asked = {  # raw completions only; logprobs=0 asks for the chosen tokens' logprobs
            "logprobs": request.top_logprobs_wanted() is not None,
            "ignore_eos": request.ignores_eos,
        }
        refused = [name for name, on in asked.items() if on]
        if refused:
            raise RequestError(
                400,
                f"{refused[0]}: not available while this server generates through generator_url; omit it",
                refused[0],
                "unsupported_parameter",
            )

    async def _codec_ready(self) -> Codec:
        async with self._lock:
            if self._codec is None:
                self._codec = await self._load_codec()
        return self._codec

    async def _load_codec(self) -> Codec:
        """The replica's tokenizer side (its `info`), or the model's files for ``generator_url``."""
        if self.model is not None:
            return (await self.model.info()).codec()
        return await asyncio.to_thread(_codec_of, self.config.model, self.config.tracking_uri)

    # -- decoding ----------------------------------------------------------------------------------

    async def _collect(self, kind: str, plan: Plan) -> ChoiceText:
        choice = new_choice(kind, plan, self._codec)
        async with aclosing(self._groups(plan)) as groups:
            async for group in groups:
                _add_group(choice, group)
                if choice.finish_reason is not None:
                    break
        return choice

    def _groups(self, plan: Plan) -> AsyncIterator[list[TokenStep]]:
        """The plan's tokens in groups as they come; closing this early (stop string, disconnect) stops
        the generator too."""
        if self.backend is None:  # the replica's processors run the policy
            return self.model.generate(plan.request)
        return self._loop_groups(plan)

    async def _loop_groups(self, plan: Plan) -> AsyncIterator[list[TokenStep]]:
        """Token groups from the segment loop over ``generator_url``, one per generator call."""
        request = plan.request
        loop = SegmentLoop(
            self.backend,
            request.prompt_ids,
            self._codec.policy(request),
            request.max_tokens,
            sampling=Sampling(request.temperature, request.top_p, request.seed),
            logit_bias=request.logit_bias,
        )
        async with aclosing(loop.stream()) as groups:
            async for group in groups:
                yield group


def _chunk(
    head: dict[str, Any],
    request: OpenAIRequest,
    choices: list[ChoiceText],
    index: int,
    group: list[TokenStep],
    prompt_tokens: int,
) -> dict[str, Any] | None:
    """The SSE chunk of one group of choice ``index``'s tokens (``None`` when it shows nothing); the
    chunk that ends the last open choice carries ``usage`` unless a usage chunk follows."""
    choice = choices[index]
    show = request.l2ray.show_thinking
    reasoning, content = _add_group(choice, group)
    final = choice.finish_reason is not None
    if not (reasoning and show) and not content and not final:
        return None
    delta = delta_body(request.kind, index, reasoning if show else "", content, choice.finish_reason)
    chunk = {**head, "choices": [delta]}
    usage_chunk = request.stream_options is not None and request.stream_options.include_usage
    if final and not usage_chunk and all(c.finish_reason is not None for c in choices):
        chunk["usage"] = usage_body(prompt_tokens, choices)
    return chunk


async def _merged(
    streams: list[AsyncIterator[list[TokenStep]]],
) -> AsyncIterator[tuple[int, list[TokenStep]]]:
    """``(index, group)`` from every stream as groups arrive; closing this closes every stream (their
    generators stop, as one stream's would)."""
    if len(streams) == 1:  # the common case: no tasks, no queue
        async with aclosing(streams[0]) as only:
            async for group in only:
                yield 0, group
        return
    queue: asyncio.Queue[tuple[int, list[TokenStep] | None]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[list[TokenStep]]) -> None:
        async with aclosing(stream) as groups:
            async for group in groups:
                await queue.put((index, group))
        await queue.put((index, None))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        open_streams = len(tasks)
        while open_streams:
            index, group = await queue.get()
            if group is None:
                open_streams -= 1
            else:
                yield index, group
        await asyncio.gather(*tasks)  # a stream's error surfaces here, not as an unretrieved future
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _add_group(choice: ChoiceText, group: list[TokenStep]) -> tuple[str, str]:
    """Add a group's tokens to ``choice`` up to its end (a stop string may end it mid-group); the
    reasoning and the content they added."""
    reasoning, content = [], []
    for step in group:
        added_reasoning, added_content = choice.add(step)
        reasoning.append(added_reasoning)
        content.append(added_content)
        if choice.finish_reason is not None:
            break
    return "".join(reasoning), "".join(content)


def _codec_of(model: str, tracking_uri: str | None) -> Codec:
    """The codec of a student URI, from its files (a ``models:/`` URI is downloaded once)."""
    from l2ray.student.resolve import resolve_student

    return Codec.from_pretrained(resolve_student(model, tracking_uri=tracking_uri))


def _prompt_ids(request: OpenAIRequest, codec: Codec) -> list[int]:
    """The request's prompt as token ids: the chat template's, or the raw prompt's."""
    if request.kind == "chat":
        try:
            return codec.chat_prompt([m.model_dump() for m in request.messages])
        except Exception as exc:  # a template may refuse a conversation (roles out of order)
            raise RequestError(400, f"messages: the chat template refused them: {exc}", "messages") from None
    prompt = list(request.prompt) if isinstance(request.prompt, list) else codec.encode(request.prompt)
    vocab_size = len(codec.tokenizer)
    if any(not 0 <= t < vocab_size for t in prompt):
        raise RequestError(400, f"prompt: token ids must be in [0, {vocab_size})", "prompt")
    return prompt


def _token_limit(request: OpenAIRequest, prompt_tokens: int, context: int, server_limit: int) -> int:
    """The request's ``max_tokens`` checked against the model's context (the server's own limits
    were checked on arrival, `l2ray.serve.protocol.check_limits`)."""
    if prompt_tokens >= context:
        raise RequestError(
            400,
            f"the prompt has {prompt_tokens} tokens; the model's context is {context}",
            "messages",
            "context_length_exceeded",
        )
    limit = request.token_limit()
    if limit is None:
        return min(server_limit, context - prompt_tokens)
    if prompt_tokens + limit > context:
        raise RequestError(
            400,
            f"prompt ({prompt_tokens} tokens) + max_tokens ({limit}) exceeds the context of {context}",
            "max_tokens",
            "context_length_exceeded",
        )
    return limit


def _logit_bias(request: OpenAIRequest, vocab_size: int) -> dict[int, float]:
    bias = request.logit_bias or {}
    for token, value in bias.items():
        if not 0 <= token < vocab_size or not -100 <= value <= 100:
            raise RequestError(
                400, f"logit_bias: token ids in [0, {vocab_size}), values in [-100, 100]", "logit_bias"
            )
    return dict(bias)
