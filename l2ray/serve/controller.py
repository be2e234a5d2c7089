"""The reasoning controller: request → policy → tokens (fast path or segment loop) → OpenAI response.

With a ``Generator`` handle the policy runs inside the replica's logits processors; with
``generator_url`` the controller drives an HTTP-only generator through the segment loop. Either way
it tokenizes, checks limits, splits thinking from answer, applies ``stop`` strings to the answer
(stopping the generator early), and fills ``usage``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from l2ray.decode.detok import IncrementalDecoder, StopStrings, ThinkingSplitter
from l2ray.decode.engine import Codec, DecodeRequest
from l2ray.decode.policy import PolicyError, RequestPolicy, opens_thinking
from l2ray.decode.segment import Sampling, stream_segment_loop
from l2ray.serve.backends import OpenAICompletionsBackend
from l2ray.serve.config import ServeConfig
from l2ray.serve.generator import GenStep, usage_counters
from l2ray.serve.protocol import ChatRequest, CompletionRequest, RequestError, parse_request


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
    policy that has observed every token, supplies the counters the generator never got to send.
    """

    index: int
    decoder: IncrementalDecoder
    splitter: ThinkingSplitter | None
    stops: StopStrings | None = None
    replay: RequestPolicy | None = None
    reasoning: str = ""
    content: str = ""
    tokens: list[int] = field(default_factory=list)
    logprobs: list[GenStep] = field(default_factory=list)
    finish_reason: str | None = None
    counters: dict[str, Any] = field(default_factory=dict)

    def add(self, step: GenStep) -> tuple[str, str]:
        """Take one step; return its ``(reasoning, content)`` text deltas."""
        delta = "" if step.is_stop else self.decoder.push([step.token])
        if not step.is_stop:
            self.tokens.append(step.token)
            self.logprobs.append(step)
            if self.replay is not None:
                self.replay.observe(step.token)
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
            self.counters = usage_counters(self.replay) if self.replay is not None else step.usage
        elif last:
            self.finish_reason = step.finish_reason
            self.counters = step.usage
        self.reasoning += reasoning
        self.content += content
        return reasoning, content


@serve.deployment(name="ReasoningController", max_ongoing_requests=64)
class ReasoningController:
    """Turns OpenAI requests into policies and decodes them (see the module doc)."""

    def __init__(self, generator: DeploymentHandle | None, settings: dict[str, Any]) -> None:
        self.config = ServeConfig.model_validate(settings)
        self.generator = generator
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

    async def respond(self, kind: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """A whole (non-streamed) response: ``(status, body)``."""
        try:
            request, plans = await self._plan(kind, payload)
        except RequestError as exc:
            return exc.status, exc.body()
        choices = await asyncio.gather(*(self._collect(kind, plan) for plan in plans))
        prompt_tokens = len(plans[0].request.prompt_ids)
        show = request.l2ray.show_thinking
        body = _envelope(kind, self.config.served_model_name, streamed=False)
        body["choices"] = [_choice_body(kind, c, show, request, self._codec) for c in choices]
        body["usage"] = _usage(prompt_tokens, choices)
        return 200, body

    async def stream(self, kind: str, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Stream a response: first ``{"status": …}`` (with ``body`` on error), then SSE chunk bodies."""
        try:
            request, [plan] = await self._plan(kind, payload)
        except RequestError as exc:
            yield {"status": exc.status, "body": exc.body()}
            return
        yield {"status": 200}
        show = request.l2ray.show_thinking
        head = _envelope(kind, self.config.served_model_name, streamed=True)
        choice = self._choice_text(kind, plan)
        if kind == "chat":
            yield {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
        async with aclosing(self._steps(plan)) as steps:
            async for step in steps:
                reasoning, content = choice.add(step)
                final = choice.finish_reason is not None
                if not (reasoning and show) and not content and not final:
                    continue
                chunk = {
                    **head,
                    "choices": [_delta(kind, reasoning if show else "", content, choice.finish_reason)],
                }
                if final:
                    chunk["usage"] = _usage(len(plan.request.prompt_ids), [choice])
                yield chunk
                if final:  # a stop string ends the choice before the generator does
                    return

    # -- planning ----------------------------------------------------------------------------------

    async def _plan(self, kind: str, payload: dict[str, Any]) -> tuple[Any, list[Plan]]:
        codec = await self._codec_ready()
        if kind == "chat":
            request = parse_request(ChatRequest, payload)
            try:
                prompt = codec.chat_prompt([m.model_dump() for m in request.messages])
            except Exception as exc:  # a template may refuse a conversation (roles out of order)
                raise RequestError(
                    400, f"messages: the chat template refused them: {exc}", "messages"
                ) from None
        else:
            request = parse_request(CompletionRequest, payload)
            prompt = (
                list(request.prompt) if isinstance(request.prompt, list) else codec.encode(request.prompt)
            )
            vocab_size = len(codec.tokenizer)
            if any(not 0 <= t < vocab_size for t in prompt):
                raise RequestError(400, f"prompt: token ids must be in [0, {vocab_size})", "prompt")
        limit = self._token_limit(request, len(prompt), codec.context_length)
        bias = self._logit_bias(request, len(codec.tokenizer))
        self._check_generator_url(request)
        # Without a seed every request samples differently (and draws its own intervention choices);
        # with one it is reproducible. Choice i uses seed + i either way.
        seed = request.seed if request.seed is not None else secrets.randbits(63)
        requests = [
            DecodeRequest(
                prompt,
                limit,
                request.l2ray.intervention(),
                temperature=request.temperature,
                top_p=request.top_p,
                seed=seed + index,
                logit_bias=bias,
                logprobs=getattr(request, "logprobs", None) or 0,
                ignore_eos=getattr(request, "ignore_eos", False),
            )
            for index in range(request.n)
        ]
        try:
            codec.policy(requests[0])
        except PolicyError as exc:
            raise RequestError(400, f"l2ray: {exc}", "l2ray") from None
        thinking = opens_thinking(prompt, codec.vocab)
        return request, [Plan(i, r, thinking, request.stop or []) for i, r in enumerate(requests)]

    def _check_generator_url(self, request: Any) -> None:
        """Refuse what the segment loop cannot do over HTTP (it passes sampling and logit_bias on)."""
        if self.backend is None:
            return
        asked = {  # raw completions only; logprobs=0 asks for the chosen tokens' logprobs
            "logprobs": getattr(request, "logprobs", None) is not None,
            "ignore_eos": getattr(request, "ignore_eos", False),
        }
        refused = [name for name, on in asked.items() if on]
        if refused:
            raise RequestError(
                400,
                f"{refused[0]}: not available while this server generates through generator_url; omit it",
                refused[0],
                "unsupported_parameter",
            )

    def _token_limit(self, request: Any, prompt_tokens: int, context: int) -> int:
        if request.n > self.config.max_n:
            raise RequestError(400, f"n: at most {self.config.max_n} choices per request", "n")
        if request.stream and request.n > 1:
            raise RequestError(400, "n: streaming supports n=1 only", "n")
        limit = request.token_limit()
        if limit is not None and limit > self.config.max_tokens_limit:
            raise RequestError(400, f"max_tokens: at most {self.config.max_tokens_limit}", "max_tokens")
        if prompt_tokens >= context:
            raise RequestError(
                400,
                f"the prompt has {prompt_tokens} tokens; the model's context is {context}",
                "messages",
                "context_length_exceeded",
            )
        if limit is None:
            return min(self.config.max_tokens_limit, context - prompt_tokens)
        if prompt_tokens + limit > context:
            raise RequestError(
                400,
                f"prompt ({prompt_tokens} tokens) + max_tokens ({limit}) exceeds the context of {context}",
                "max_tokens",
                "context_length_exceeded",
            )
        return limit

    @staticmethod
    def _logit_bias(request: Any, vocab_size: int) -> dict[int, float]:
        bias = request.logit_bias or {}
        for token, value in bias.items():
            if not 0 <= token < vocab_size or not -100 <= value <= 100:
                raise RequestError(
                    400, f"logit_bias: token ids in [0, {vocab_size}), values in [-100, 100]", "logit_bias"
                )
        return dict(bias)

    async def _codec_ready(self) -> Codec:
        async with self._lock:
            if self._codec is None:
                self._codec = await self._load_codec()
        return self._codec

    async def _load_codec(self) -> Codec:
        if self.generator is not None:
            info = await self.generator.info.remote()
            return Codec(info["tokenizer"], info["stop_ids"], info["context_length"])
        return await asyncio.to_thread(_codec_from_uri, self.config.model, self.config.tracking_uri)

    # -- decoding ----------------------------------------------------------------------------------

    def _choice_text(self, kind: str, plan: Plan) -> ChoiceText:
        assert self._codec is not None
        splitter = ThinkingSplitter(plan.thinking) if kind == "chat" else None
        stops = StopStrings(plan.stop) if plan.stop else None
        replay = self._codec.policy(plan.request) if plan.stop else None
        return ChoiceText(plan.index, IncrementalDecoder(self._codec.tokenizer), splitter, stops, replay)

    async def _collect(self, kind: str, plan: Plan) -> ChoiceText:
        choice = self._choice_text(kind, plan)
        async with aclosing(self._steps(plan)) as steps:
            async for step in steps:
                choice.add(step)
                if choice.finish_reason is not None:
                    break
        return choice

    async def _steps(self, plan: Plan) -> AsyncIterator[GenStep]:
        """The plan's tokens; closing this early (stop string, disconnect) stops the generator too."""
        if self.backend is None:
            assert self.generator is not None
            response = self.generator.options(stream=True).generate.remote(plan.request)
            finished = False
            try:
                async for group in response:
                    for step in group:
                        finished = finished or step.finish_reason is not None
                        yield step
            finally:
                if not finished:
                    response.cancel()  # the replica frees the row (see Generator.generate)
            return
        assert self._codec is not None
        request = plan.request
        policy = self._codec.policy(request)
        sampling = Sampling(request.temperature, request.top_p, request.seed)
        deltas = stream_segment_loop(
            self.backend,
            request.prompt_ids,
            policy,
            request.max_tokens,
            sampling=sampling,
            logit_bias=request.logit_bias,
        )
        async with aclosing(deltas):
            async for delta in deltas:  # one group per generator call: streams as the loop goes
                steps = [GenStep(token) for token in delta.tokens]
                if delta.finish_reason is not None:
                    steps = steps or [GenStep(self._codec.pad_id, is_stop=True)]
                    steps[-1].finish_reason = delta.finish_reason
                    steps[-1].usage = usage_counters(policy)
                for step in steps:
                    yield step


def _codec_from_uri(model: str, tracking_uri: str | None) -> Codec:
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    from l2ray.student.resolve import resolve_student

    path = resolve_student(model, tracking_uri=tracking_uri)
    tokenizer = AutoTokenizer.from_pretrained(path)
    try:
        eos = GenerationConfig.from_pretrained(path).eos_token_id
    except OSError:
        eos = None
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    stops = [i for i in (*eos, tokenizer.eos_token_id, tokenizer.pad_token_id) if i is not None]
    context = int(getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", 0) or 1 << 30)
    return Codec(tokenizer, stops, context)


def _envelope(kind: str, model: str, streamed: bool) -> dict[str, Any]:
    prefix, obj = ("chatcmpl", "chat.completion") if kind == "chat" else ("cmpl", "text_completion")
    return {
        "id": f"{prefix}-{uuid.uuid4().hex[:24]}",
        "object": obj + (".chunk" if streamed and kind == "chat" else ""),
        "created": int(time.time()),
        "model": model,
    }


def _choice_body(
    kind: str, choice: ChoiceText, show: bool, request: Any, codec: Codec | None
) -> dict[str, Any]:
    if kind == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": choice.content}
        if show and choice.reasoning:
            message["reasoning_content"] = choice.reasoning
        return {
            "index": choice.index,
            "message": message,
            "finish_reason": choice.finish_reason,
            "logprobs": None,
        }
    logprobs = None
    if request.logprobs is not None and codec is not None:
        logprobs = _completion_logprobs(choice, codec, request.return_tokens_as_token_ids)
    return {
        "index": choice.index,
        "text": choice.content,
        "finish_reason": choice.finish_reason,
        "logprobs": logprobs,
    }


def _completion_logprobs(choice: ChoiceText, codec: Codec, as_ids: bool) -> dict[str, Any]:
    def name(token: int) -> str:
        return f"token_id:{token}" if as_ids else codec.tokenizer.decode([token], skip_special_tokens=False)

    tokens = [name(s.token) for s in choice.logprobs]
    offsets, at = [], 0
    for text in tokens:
        offsets.append(at)
        at += 0 if as_ids else len(text)
    return {
        "tokens": tokens,
        "token_logprobs": [s.logprob for s in choice.logprobs],
        "top_logprobs": [{name(t): lp for t, lp in (s.top or [])} for s in choice.logprobs],
        "text_offset": offsets,
    }


def _delta(kind: str, reasoning: str, content: str, finish: str | None) -> dict[str, Any]:
    if kind != "chat":
        return {"index": 0, "text": content, "finish_reason": finish, "logprobs": None}
    delta: dict[str, Any] = {}
    if reasoning:
        delta["reasoning_content"] = reasoning
    if content:
        delta["content"] = content
    return {"index": 0, "delta": delta, "finish_reason": finish}


def _usage(prompt_tokens: int, choices: list[ChoiceText]) -> dict[str, Any]:
    languages: dict[str, int] = {}
    for choice in choices:
        for code, count in choice.counters.get("language_tokens", {}).items():
            languages[code] = languages.get(code, 0) + count
    total = sum(languages.values())
    completion = sum(len(c.tokens) for c in choices)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
        "thinking_tokens": sum(c.counters.get("thinking_tokens", 0) for c in choices),
        "answer_tokens": sum(c.counters.get("answer_tokens", 0) for c in choices),
        "language_mix": {k: round(v / total, 4) for k, v in sorted(languages.items(), key=lambda kv: -kv[1])},
        "switches": sum(c.counters.get("switches", 0) for c in choices),
    }
