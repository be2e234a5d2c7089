"""The teacher protocol: chat messages and sampling parameters in, text and token usage out.

Example:
    >>> params = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=64)
    >>> request_fingerprint("m", [{"role": "user", "content": "hi"}], params, "v1")[:12]
    'fd6ba517ce31'
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

from l2ray.errors import L2rayError
from l2ray.recipe import TeacherConfig
from l2ray.teacher.prices import price_of

Message = dict[str, str]


@dataclass(frozen=True)
class SamplingParams:
    """What, besides the messages, decides a teacher's answer."""

    temperature: float
    top_p: float
    max_tokens: int

    @classmethod
    def from_config(cls, config: TeacherConfig) -> SamplingParams:
        return cls(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens)


@dataclass(frozen=True)
class Usage:
    """Tokens one request consumed (as the endpoint reported them)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def cost(self, config: TeacherConfig) -> float:
        """USD at the role's price (`l2ray.teacher.prices.price_of`); 0 for a model without a price."""
        return price_of(config).cost(self.prompt_tokens, self.completion_tokens)


@dataclass(frozen=True)
class TeacherReply:
    """A finished request: the assistant text (reasoning, if sent apart, folded into ``<think>``)."""

    text: str
    usage: Usage
    finish_reason: str = "stop"
    model: str = ""  # the model id the endpoint says answered ("" when it did not say)

    def to_dict(self) -> dict:
        return asdict(self)


class TeacherError(L2rayError, RuntimeError):
    """A request that failed for good (after retries, or on a non-retryable status).

    ``reason`` is a short code for tables and summaries: ``http_400``, ``http_500``, ``timeout``,
    ``connection``, ``malformed_json``, ``empty_content``, ``rate_limited``, ``content_filter``,
    ``budget`` (the role's ``max_cost_usd`` was reached; nothing was sent).
    """

    def __init__(self, reason: str, detail: str, attempts: int = 1) -> None:
        super().__init__(f"{reason} after {attempts} attempt(s): {detail}")
        self.reason, self.detail, self.attempts = reason, detail, attempts


class Secret:
    """A value that must not be printed: its repr and str are masked (logs, tracebacks, Ray UIs).

    The driver reads the API key once and hands it to the actors wrapped in this, so the key needs
    no runtime-env entry (those are logged) and the actors need no copy of the driver's environment.

    Example:
        >>> Secret("sk-123")
        Secret('***')
    """

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    @classmethod
    def from_env(cls, name: str | None) -> Secret | None:
        value = os.environ.get(name) if name else None
        return cls(value) if value else None


class MissingKeyError(L2rayError, RuntimeError):
    """An endpoint whose API-key variable is not set in the environment (checked before any request)."""


def require_key(config: TeacherConfig, where: str) -> Secret | None:
    """The key an HTTP teacher sends, read from ``$<api_key_env>``; a variable that is unset is an error
    naming it and the fix (``where``: the recipe section, e.g. ``teachers.reasoner``)."""
    if config.kind != "openai" or not config.base_url or config.api_key_env is None:
        return None
    key = Secret.from_env(config.api_key_env)
    if key is None:
        raise MissingKeyError(
            f"{where}: the API key variable ${config.api_key_env} is not set; export "
            f"{config.api_key_env}=<key for {config.base_url}>, or set {where}.api_key_env: null for an "
            "endpoint without a key"
        )
    return key


@runtime_checkable
class Teacher(Protocol):
    """Anything that answers chat messages; implementations are async and safe to call concurrently."""

    model: str

    async def complete(
        self, messages: list[Message], params: SamplingParams, fingerprint: str | None = None
    ) -> TeacherReply:
        """Answer one conversation. ``fingerprint`` is sent along for tracing (never used as a key)."""
        ...

    async def aclose(self) -> None:
        """Release connections, models, threads."""
        ...


def request_fingerprint(
    model: str, messages: list[Message], params: SamplingParams, prompt_version: str
) -> str:
    """Content address of a request: sha256 of (model, messages, sampling params, prompt version)."""
    payload = json.dumps(
        {"model": model, "messages": messages, "params": asdict(params), "prompt_version": prompt_version},
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def estimate_tokens(text: str) -> int:
    """A prompt's tokens before the endpoint counts them: ~4 characters a token for alphabetic
    scripts, ~1 a character for CJK and other wide scripts (``len // 4`` alone undercounts Chinese
    about fourfold, and the TPM limit would let too much through)."""
    wide = sum(1 for ch in text if ord(ch) >= 0x2E80)
    return wide + (len(text) - wide) // 4
