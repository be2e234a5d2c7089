"""What is decoded and what decoding produces, whichever engine runs it: a `DecodeRequest` in, a
`TokenStep` per token and a `Completion` per request out.

The in-process engine, the serve Generator replica, the HTTP segment loop and evaluation's engines
all speak these types (no torch here: evaluation and the controller import them cheaply).

Example:
    >>> done = Completion("<|lang:en|>2+2=4</think>4", "stop", {"thinking_tokens": 5, "answer_tokens": 1})
    >>> done.thinking_tokens, done.failed
    (5, False)
    >>> Completion(None, error="HTTP 500: boom").failed
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from l2ray.decode.spec import PolicySpec
from l2ray.recipe import InterventionConfig


@dataclass
class DecodeRequest:
    """One request: token ids in, limits, sampling and the intervention.

    ``logprobs`` asks for that many top alternatives per token, from the distribution *before* any
    processor (what the HTTP segment loop needs to find switch points). ``cancelled`` may be set
    while the row decodes (by whoever holds the same object, in the same process): the row ends at
    the next step without further steps, so a caller that stopped listening (a stop string, a
    disconnect) does not keep a batch slot busy up to ``max_tokens``. ``spec`` is the intervention as
    engines run it, set once by `Codec.spec` when the request is admitted.
    """

    prompt_ids: list[int]
    max_tokens: int
    intervention: InterventionConfig = field(default_factory=InterventionConfig)
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    logit_bias: dict[int, float] = field(default_factory=dict)
    logprobs: int = 0
    ignore_eos: bool = False
    cancelled: bool = field(default=False, compare=False, repr=False)
    spec: PolicySpec | None = field(default=None, compare=False, repr=False)


@dataclass
class TokenStep:
    """One generated token of one request.

    Attributes:
        token: the token id.
        logprob: its log-probability before any intervention (when asked for).
        top: the top alternatives ``(token, logprob)`` at its position (when asked for).
        finish_reason: set on the request's last step (``"stop"``, ``"length"``).
        is_stop: a stop token (EOS): it ends the request and is not part of the completion.
        usage: on the last step, the request's counters (`RequestPolicy.counters`).
    """

    token: int
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None
    finish_reason: str | None = None
    is_stop: bool = False
    usage: dict[str, Any] = field(default_factory=dict)


@dataclass
class Completion:
    """One finished request: its text and what it cost, or why it failed.

    Attributes:
        text: the generated text (special tokens kept), ``None`` when the request failed.
        finish_reason: ``"stop"``, ``"length"``… (``None`` when it failed).
        usage: the engine's counters: ``prompt_tokens``, ``completion_tokens`` and, where the engine
            knows them, ``thinking_tokens``, ``answer_tokens`` (the closing ``</think>`` included, so
            the two add up to ``completion_tokens``), ``switches``, ``tag_mix``.
        error: why the request failed (``None`` when it did not).
        latency_s: seconds the request took (a batch's time shared by its rows in-process).
        starts_in_thinking: the text began inside a ``<think>`` block opened before it (by the prompt,
            or by a server that split the reasoning out); without a ``</think>`` in ``text`` the thinking
            never closed and there is no answer to grade.
    """

    text: str | None
    finish_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    latency_s: float = 0.0
    starts_in_thinking: bool = False

    @property
    def failed(self) -> bool:
        return self.text is None

    @property
    def prompt_tokens(self) -> int:
        return int(self.usage.get("prompt_tokens", 0))

    @property
    def completion_tokens(self) -> int:
        return int(self.usage.get("completion_tokens", 0))

    @property
    def thinking_tokens(self) -> int:
        return int(self.usage.get("thinking_tokens", 0))

    @property
    def answer_tokens(self) -> int:
        return int(self.usage.get("answer_tokens", 0))

    @property
    def switches(self) -> int:
        return int(self.usage.get("switches", 0))

    @property
    def tag_mix(self) -> dict[str, float]:
        """Share of thinking tokens under each language's tag."""
        return dict(self.usage.get("tag_mix", {}))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


__all__ = ["Completion", "DecodeRequest", "TokenStep"]
