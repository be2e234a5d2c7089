"""The OpenAI-compatible wire format: request schemas, l2ray options, error bodies.

Unknown top-level OpenAI fields are ignored (clients send many); the ``l2ray`` options object is
strict, so a misspelt knob is an error instead of a silent no-op.

Example:
    >>> body = {"model": "l2ray", "messages": [{"role": "user", "content": "1+1?"}],
    ...         "l2ray": {"force": "zh", "show_thinking": False}}
    >>> ChatRequest.model_validate(body).l2ray.force
    'zh'
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from l2ray.decode.config import InterventionConfig


class L2rayOptions(InterventionConfig):
    """The intervention plus presentation: ``show_thinking`` returns the thinking as ``reasoning_content``."""

    show_thinking: bool = True

    def intervention(self) -> InterventionConfig:
        """Just the decoding knobs."""
        return InterventionConfig(**self.model_dump(exclude={"show_thinking"}))


class Message(BaseModel):
    """One chat message (text content only)."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1)
    stream: bool = False
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    logit_bias: dict[int, float] | None = None
    l2ray: L2rayOptions = Field(default_factory=L2rayOptions)


class ChatRequest(_Common):
    """``POST /v1/chat/completions``."""

    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    def token_limit(self) -> int | None:
        """``max_completion_tokens`` (the newer name) or ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Common):
    """``POST /v1/completions``: a raw prompt (text or token ids), no chat template."""

    prompt: str | list[int] = Field(min_length=1)
    max_tokens: int = Field(default=16, ge=1)
    logprobs: int | None = Field(default=None, ge=0, le=20)
    return_tokens_as_token_ids: bool = False
    ignore_eos: bool = False

    def token_limit(self) -> int:
        return self.max_tokens


class RequestError(Exception):
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
