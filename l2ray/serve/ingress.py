"""The HTTP front door: OpenAI-compatible routes, API keys, body limit, per-key concurrency.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions`` (streaming SSE or not),
``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /healthz`` (liveness: this process answers) and
``GET /readyz`` (readiness: 200 only while a Generator replica can take a request — its engine has
produced a token — else 503), both open without a key. A 503 carries ``Retry-After``. Bodies must be
``application/json`` (415) and at most `MAX_JSON_DEPTH` levels deep (400). Every refusal is an
OpenAI-style error body; a failure after a stream has started arrives as an SSE
``data: {"error": …}`` event before ``[DONE]`` (the status line has already gone out). Configured
API keys that cannot be read stop the replica from starting (see `l2ray.serve.security`).
"""

# No `from __future__ import annotations`: FastAPI must resolve the route signatures that Serve rebinds.

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.exceptions import TaskCancelledError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from l2ray.recipe import ServeConfig
from l2ray.serve.controller import REPLICA_LOST, ReasoningController
from l2ray.serve.links import model_link
from l2ray.serve.protocol import SCHEMAS, RequestError, check_limits, parse_request, unavailable
from l2ray.serve.security import ConcurrencyLimiter, KeyGuard, load_keys, read_body
from l2ray.student.model_ref import ModelRef

logger = logging.getLogger("ray.serve")

api = FastAPI(title="l2ray", description="OpenAI-compatible L² reasoning server")


MAX_JSON_DEPTH = 32
"""Nesting a request body may have: an OpenAI request needs about 5 levels."""


# Helpers come before the class: Serve ships the ingress class by value with the globals defined so far.
def parse_json_body(raw: bytes, content_type: str | None) -> Any:
    """The decoded body of a POST: ``application/json`` (415 otherwise), valid JSON and at most
    `MAX_JSON_DEPTH` levels deep (400 otherwise, never a 500 from the parser's recursion)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json":
        raise RequestError(
            415,
            f"Content-Type must be application/json, got {content_type or 'none'!r}",
            code="unsupported_media",
        )
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        body = None  # deeper than the parser goes: deeper than MAX_JSON_DEPTH too
    if body is None or _depth(body) > MAX_JSON_DEPTH:
        raise RequestError(
            400, f"the request body nests deeper than {MAX_JSON_DEPTH} levels", code="invalid_json"
        )
    return body


def _depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _error(exc: RequestError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())


def _answer(status: int, body: dict[str, Any]) -> JSONResponse:
    """The controller's ``(status, body)`` as a response (a 503 says when to retry)."""
    headers = RequestError(status, "").headers()
    return JSONResponse(body, status_code=status, headers=headers)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return _error(RequestError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}"))


@api.exception_handler(Exception)
async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s", request.url.path)
    return _error(RequestError(500, "internal server error (logged on the server)"))


def _downstream_failure(exc: Exception, path: str) -> JSONResponse:
    """A downstream call that did not complete: the client hung up (Serve cancelled the call: INFO),
    or a replica was lost (a 503 to retry). Handled here, not by the catch-all above, which Starlette
    re-raises after answering (an ERROR line and a traceback for what is not an error)."""
    if isinstance(exc, TaskCancelledError):
        logger.info("a client left %s before its response was complete", path)
        return _error(RequestError(499, "the client closed the request"))
    logger.warning("a replica was lost while answering %s (%s)", path, type(exc).__name__)
    return _error(unavailable("the server lost a replica while answering"))


def _sse_data(body: Any) -> str:
    """One SSE event carrying ``body`` as JSON."""
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def sse_events(
    chunks: AsyncIterator[dict[str, Any]], release: Callable[[], None]
) -> AsyncIterator[str]:
    """Chunk bodies as SSE events, then ``[DONE]``; ``release`` runs once the stream is over.

    An exception mid-stream is logged and sent as an OpenAI error event (clients such as the openai
    package raise it) followed by ``[DONE]``, so a failure never looks like a short, finished answer.
    """
    try:
        async for chunk in chunks:
            yield _sse_data(chunk)
    except TaskCancelledError:  # the client hung up mid-stream: nobody to tell
        logger.info("a client left a stream before it ended")
    except Exception as exc:
        if isinstance(exc, REPLICA_LOST):
            logger.warning("a replica was lost while streaming a response (%s)", type(exc).__name__)
            yield _sse_data(unavailable("the server lost a replica while answering").body())
        else:
            logger.exception("error while streaming a response")
            yield _sse_data(RequestError(500, "internal server error while streaming (logged)").body())
    finally:
        release()
    yield "data: [DONE]\n\n"


@serve.deployment(name="Ingress", max_ongoing_requests=256)
@serve.ingress(api)
class Ingress:
    """Authenticates, validates and hands the request to its `ReasoningController` (in this process),
    which calls the Generator deployment (``generator``), or in the direct graph the generator this
    replica builds and holds (``generator`` None; also None with ``generator_url``)."""

    def __init__(
        self, generator: DeploymentHandle | None, config: ServeConfig, served: ModelRef | None = None
    ) -> None:
        self.config = config
        # Raises ApiKeyConfigError (the replica does not start) when configured keys cannot be read:
        # before a direct graph's engine loads for nothing.
        self.guard = KeyGuard(load_keys(self.config.api_keys_env, self.config.api_keys_file))
        # What the Generator replicas load (`app.pin_model`): reported by /v1/models.
        self.served = served or ModelRef(self.config.model or "")
        self.controller = ReasoningController(model_link(generator, config, self.served.uri), config)
        self.limiter = ConcurrencyLimiter(self.config.max_concurrency_per_key)
        self.names = {self.config.served_model_name} | ({self.config.model} if self.config.model else set())
        if self.guard.enabled:
            logger.info("l2ray ingress up; API keys required")
        else:
            logger.warning(
                "l2ray ingress up WITHOUT API keys: anyone who reaches this port can use it "
                "(set serve.api_keys_env or serve.api_keys_file to require keys)"
            )

    async def check_health(self) -> None:
        """Serve's periodic health check: in the direct graph, of the engine in this process (a dead
        one fails it, and Serve replaces the replica)."""
        if self.controller.model is not None:
            await self.controller.model.check_health()

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        """Liveness: this process answers (it says nothing of the model: see ``/readyz``)."""
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        """Readiness: 200 only while a Generator replica can take a request now."""
        try:
            return _answer(*await self.controller.readiness())
        except (TaskCancelledError, *REPLICA_LOST) as exc:
            return _downstream_failure(exc, "/readyz")

    @api.get("/v1/models")
    async def models(self, request: Request) -> JSONResponse:
        try:
            self.guard.authenticate(request.headers.get("authorization"))
        except RequestError as exc:
            return _error(exc)
        return JSONResponse({"object": "list", "data": [self._card()]})

    @api.get("/v1/models/{model_id:path}")
    async def model(self, model_id: str, request: Request) -> JSONResponse:
        try:
            self.guard.authenticate(request.headers.get("authorization"))
            if model_id != self.config.served_model_name:
                raise RequestError(
                    404,
                    f"model {model_id!r} does not exist; served: {self.config.served_model_name!r}",
                    "model",
                )
        except RequestError as exc:
            return _error(exc)
        return JSONResponse(self._card())

    def _card(self) -> dict[str, Any]:
        """OpenAI's model object; ``l2ray`` says what it is: the configured model and the registry
        version (URI, number, training run) every replica of this deploy loaded."""
        return {
            "id": self.config.served_model_name,
            "object": "model",
            "created": 0,
            "owned_by": "l2ray",
            "l2ray": {"model": self.config.model, **self.served.to_dict()},
        }

    @api.post("/v1/chat/completions")
    async def chat(self, request: Request) -> Any:
        return await self._serve(request, "chat")

    @api.post("/v1/completions")
    async def completions(self, request: Request) -> Any:
        return await self._serve(request, "completion")

    async def _serve(self, request: Request, kind: str) -> Any:
        try:
            who = self.guard.authenticate(request.headers.get("authorization"))
            raw = await read_body(
                request.stream(), request.headers.get("content-length"), self.config.max_body_bytes
            )
            parsed = parse_request(SCHEMAS[kind], parse_json_body(raw, request.headers.get("content-type")))
            if parsed.model not in self.names:
                raise RequestError(
                    404,
                    f"model {parsed.model!r} does not exist; served: {self.config.served_model_name!r}",
                    "model",
                    "model_not_found",
                )
            check_limits(parsed, self.config)
            self.limiter.acquire(who)
        except RequestError as exc:
            return _error(exc)
        streaming = False
        try:
            if not parsed.stream:
                return _answer(*await self.controller.respond(parsed))
            chunks = self.controller.stream(parsed)
            head = await anext(chunks)
            if head["status"] != 200:
                return _answer(head["status"], head["body"])
            streaming = True
            events = sse_events(chunks, lambda: self.limiter.release(who))
            return StreamingResponse(events, media_type="text/event-stream")
        except (TaskCancelledError, *REPLICA_LOST) as exc:
            return _downstream_failure(exc, request.url.path)
        finally:
            if not streaming:
                self.limiter.release(who)
