"""The OpenAI-compatible wire format: request schemas, l2ray options, error bodies.

Unknown top-level fields that cannot change the output are ignored (``user``, ``metadata``…:
clients send many). OpenAI fields that would change the output but are not
implemented (penalties, chat ``logprobs``, ``tools``, ``response_format``, ``echo``…) are refused
with a 400 naming the field when they carry anything but their neutral value, so a client never gets
an answer that silently ignored what it asked for. The ``l2ray`` options object is strict, so a
misspelt knob is an error instead of a silent no-op. Types are strict: ``"true"`` is not a boolean
and ``"8"`` not a number (400). Chat messages take text or ``{"type": "text"}`` content parts.
``temperature`` and ``top_p`` left out take the model's own defaults (its generation config, else
OpenAI's 1.0); ``n > 1`` streams every choice by its ``index``.

Example:
    >>> body = {"model": "l2ray", "messages": [{"role": "user", "content": "1+1?"}],
    ...         "l2ray": {"force": "zh", "show_thinking": False}}
    >>> ChatRequest.model_validate(body).l2ray.force
    'zh'
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from l2ray.errors import L2rayError
from l2ray.recipe import InterventionConfig, ServeConfig

MAX_SEED = 2**63 - 1
MAX_STOP = 4
"""OpenAI's limit on stop sequences; each is searched for after every token, so they stay few."""
MAX_STOP_CHARS = 200


class L2rayOptions(InterventionConfig):
    """The intervention plus presentation: ``show_thinking`` returns the thinking as ``reasoning_content``.

    Strict: ``"true"`` is not a boolean and ``"3"`` is not a number here.
    """

    model_config = ConfigDict(strict=True)

    show_thinking: bool = True

    def intervention(self) -> InterventionConfig:
        """Just the decoding knobs."""
        return InterventionConfig(**self.model_dump(exclude={"show_thinking"}))


class Message(BaseModel):
    """One chat message: text, or OpenAI content parts of type ``text`` (joined into one text)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["system", "user", "assistant"]
    content: str

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        texts = []
        for part in value:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise unsupported(f"content parts must be {{'type': 'text', 'text': ...}}; got {kind!r}")
            texts.append(part["text"])
        return "".join(texts)


def unsupported(fix: str) -> PydanticCustomError:
    """The error of a known OpenAI field this server does not implement (code ``unsupported_parameter``)."""
    return PydanticCustomError("unsupported_parameter", "not supported by this server; {fix}", {"fix": fix})


class StreamOptions(BaseModel):
    """``stream_options``: with ``include_usage`` the stream ends with a chunk of ``choices: []`` and
    the usage (as OpenAI and vLLM send it) instead of usage on the last content chunk."""

    model_config = ConfigDict(extra="ignore")

    include_usage: bool = Field(default=False, strict=True)


class _Common(BaseModel):
    # Strict: a string is not a boolean or a number ("false" would otherwise turn into False).
    model_config = ConfigDict(extra="ignore", strict=True)

    kind: ClassVar[Literal["chat", "completion"]]

    model: str = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, description="default: the model's")
    top_p: float | None = Field(default=None, gt=0.0, le=1.0, description="default: the model's")
    n: int = Field(default=1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    """``None``: the controller draws a fresh seed per request, so sampling varies between calls."""
    stop: list[str] | None = None
    """Stop strings (a single string is accepted): the answer ends before the first one it contains."""
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[Annotated[int, Strict(False)], float] | None = None  # JSON keys are strings
    l2ray: L2rayOptions = Field(default_factory=L2rayOptions)

    def sampling(self) -> dict[str, float | None]:
        """``temperature`` and ``top_p`` as asked (``None``: the model's default)."""
        return {"temperature": self.temperature, "top_p": self.top_p}

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("stop")
    @classmethod
    def _valid_stop(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if len(value) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings, got {len(value)}; send fewer")
        if any(not s or len(s) > MAX_STOP_CHARS for s in value):
            raise ValueError(f"each stop string must have 1 to {MAX_STOP_CHARS} characters")
        return value or None

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value: float | None) -> float | None:
        if value:
            raise unsupported("omit it or send 0")
        return value


class ChatRequest(_Common):
    """``POST /v1/chat/completions``."""

    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("logprobs", "top_logprobs")
    @classmethod
    def _no_chat_logprobs(cls, value: bool | int | None) -> bool | int | None:
        if value:
            raise unsupported("omit it (/v1/completions returns logprobs)")
        return value

    @field_validator("tools", "functions")
    @classmethod
    def _no_tools(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise unsupported("omit it; the model answers in text only")
        return value

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value and value.get("type", "text") != "text":
            raise unsupported("omit it or send {'type': 'text'}")
        return value

    kind = "chat"

    def token_limit(self) -> int | None:
        """``max_completion_tokens`` (the newer name) or ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens

    def top_logprobs_wanted(self) -> int | None:
        """Top alternatives per token to return: chat logprobs are refused above, so none."""
        return None

    @property
    def ignores_eos(self) -> bool:
        return False


class CompletionRequest(_Common):
    """``POST /v1/completions``: a raw prompt (text or token ids), no chat template."""

    prompt: str | list[int] = Field(min_length=1)
    max_tokens: int = Field(default=16, ge=1)
    logprobs: int | None = Field(default=None, ge=0, le=20)
    return_tokens_as_token_ids: bool = False
    ignore_eos: bool = False
    echo: bool = False
    best_of: int | None = Field(default=None, ge=1)
    suffix: str | None = None

    @field_validator("echo", "suffix")
    @classmethod
    def _no_echo_or_suffix(cls, value: bool | str | None) -> bool | str | None:
        if value:
            raise unsupported("omit it")
        return value

    @field_validator("best_of")
    @classmethod
    def _no_best_of(cls, value: int | None) -> int | None:
        if value is not None and value > 1:
            raise unsupported("omit it or send 1 (ask for n choices instead)")
        return value

    kind = "completion"

    def token_limit(self) -> int:
        return self.max_tokens

    def top_logprobs_wanted(self) -> int | None:
        """``logprobs``: ``None`` for none, else the alternatives per token (0: the chosen token's only)."""
        return self.logprobs

    @property
    def ignores_eos(self) -> bool:
        return self.ignore_eos


OpenAIRequest = ChatRequest | CompletionRequest
SCHEMAS: dict[str, type[ChatRequest] | type[CompletionRequest]] = {
    "chat": ChatRequest,
    "completion": CompletionRequest,
}


def check_limits(request: OpenAIRequest, config: ServeConfig) -> None:
    """Refuse (400) what the server's limits (`ServeConfig`) do not allow, before any work."""
    if request.n > config.max_n:
        raise RequestError(400, f"n: at most {config.max_n} choices per request", "n")
    limit = request.token_limit()
    if limit is not None and limit > config.max_tokens_limit:
        raise RequestError(400, f"max_tokens: at most {config.max_tokens_limit}", "max_tokens")


class RequestError(L2rayError):
    """A request the server refuses, with the OpenAI error body it answers."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None, kind: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code
        self.kind = kind or _KINDS.get(status, "invalid_request_error")

    def body(self) -> dict[str, Any]:
        """``{"error": {"message", "type", "param", "code"}}``."""
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        """A 503 says when to retry (`RETRY_AFTER_S`); other refusals need no header."""
        return {"Retry-After": str(RETRY_AFTER_S)} if self.status == 503 else {}


class ModelLost(L2rayError, RuntimeError):
    """A model replica's engine died while it answered: the client is told `unavailable` (503)."""


def unavailable(message: str) -> RequestError:
    """A 503 a client can act on: the model is loading, or a replica was lost and is being replaced."""
    return RequestError(503, f"{message}; retry in {RETRY_AFTER_S} s", code="model_unavailable")


RETRY_AFTER_S = 5
"""What a 503 asks a client to wait (seconds) before it retries."""


def parse_request(model: type[BaseModel], payload: Any) -> Any:
    """Validate a decoded JSON body; raises `RequestError` (400) naming the first bad field."""
    if not isinstance(payload, dict):
        raise RequestError(400, f"the request body must be a JSON object, got {type(payload).__name__}")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        message = err["msg"].removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise RequestError(400, f"{where}: {message}{more}", param=where, code=err["type"]) from None


_KINDS = {
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}
