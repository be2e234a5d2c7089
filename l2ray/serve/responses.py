"""OpenAI response bodies: the envelope, a choice, a streamed delta, ``usage`` and completion logprobs.

``usage`` carries l2ray's counters beside OpenAI's: ``thinking_tokens`` and ``answer_tokens`` (the
closing ``</think>`` counted in the answer, so the two add up to ``completion_tokens``),
``language_mix`` (each language's share of the thinking's letters, measured on the text by
`l2ray.text.langmix`), ``tag_mix`` (each language's share of thinking tokens written under its tag:
what the tags say) and ``switches`` (between tags).

Example:
    >>> envelope("chat", "l2ray", streamed=True)["object"]
    'chat.completion.chunk'
    >>> delta_body("chat", 0, "", "4", "stop")
    {'index': 0, 'delta': {'content': '4'}, 'finish_reason': 'stop'}
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from l2ray.decode.codec import Codec
from l2ray.serve.choices import ChoiceText
from l2ray.serve.protocol import OpenAIRequest
from l2ray.text.langmix import measure_language_mix, shares


def envelope(kind: str, model: str, streamed: bool) -> dict[str, Any]:
    """``id``, ``object``, ``created`` and ``model`` of a response (or of each of its chunks)."""
    prefix, obj = ("chatcmpl", "chat.completion") if kind == "chat" else ("cmpl", "text_completion")
    return {
        "id": f"{prefix}-{uuid.uuid4().hex[:24]}",
        "object": obj + (".chunk" if streamed and kind == "chat" else ""),
        "created": int(time.time()),
        "model": model,
    }


def choice_body(choice: ChoiceText, request: OpenAIRequest, codec: Codec) -> dict[str, Any]:
    """One choice of a whole (non-streamed) response."""
    if request.kind == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": choice.content}
        if request.l2ray.show_thinking and choice.reasoning:
            message["reasoning_content"] = choice.reasoning
        return {
            "index": choice.index,
            "message": message,
            "finish_reason": choice.finish_reason,
            "logprobs": None,
        }
    logprobs = None
    if request.top_logprobs_wanted() is not None:
        logprobs = completion_logprobs(choice, codec, request.return_tokens_as_token_ids)
    return {
        "index": choice.index,
        "text": choice.content,
        "finish_reason": choice.finish_reason,
        "logprobs": logprobs,
    }


def completion_logprobs(choice: ChoiceText, codec: Codec, as_ids: bool) -> dict[str, Any]:
    """The legacy completions ``logprobs`` object (``token_id:N`` names with ``as_ids``, vLLM's form)."""

    def name(token: int) -> str:
        return f"token_id:{token}" if as_ids else codec.decode([token])

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


def delta_body(kind: str, index: int, reasoning: str, content: str, finish: str | None) -> dict[str, Any]:
    """Choice ``index`` of one streamed chunk."""
    if kind != "chat":
        return {"index": index, "text": content, "finish_reason": finish, "logprobs": None}
    delta: dict[str, Any] = {}
    if reasoning:
        delta["reasoning_content"] = reasoning
    if content:
        delta["content"] = content
    return {"index": index, "delta": delta, "finish_reason": finish}


def usage_body(prompt_tokens: int, choices: list[ChoiceText]) -> dict[str, Any]:
    """``usage`` over every choice of a response."""
    languages: dict[str, int] = {}
    for choice in choices:
        for code, count in choice.counters.get("language_tokens", {}).items():
            languages[code] = languages.get(code, 0) + count
    completion = sum(len(c.tokens) for c in choices)
    thinking = "\n".join(c.thinking_text() for c in choices)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
        "thinking_tokens": sum(c.counters.get("thinking_tokens", 0) for c in choices),
        "answer_tokens": sum(c.counters.get("answer_tokens", 0) for c in choices),
        "language_mix": measure_language_mix(thinking).char_share if thinking.strip() else {},
        "tag_mix": shares(languages),
        "switches": sum(c.counters.get("switches", 0) for c in choices),
    }


__all__ = ["choice_body", "completion_logprobs", "delta_body", "envelope", "usage_body"]
