"""The model replica: batches concurrent requests through one decode loop and streams tokens.

Per-token logic (the intervention) runs inside the replica; callers get one small item per token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from l2ray.decode.codec import CodecInfo
from l2ray.decode.engine import DecodeEngine
from l2ray.decode.types import DecodeRequest, TokenStep

logger = logging.getLogger("ray.serve")

FLUSH_S = 0.02
"""Tokens produced within this many seconds travel to the controller as one message: a message per
token costs more than decoding a token of a small model."""


@serve.deployment(name="Generator", max_ongoing_requests=64)
class Generator:
    """Loads the student (via `resolve_student`) and decodes batches with the intervention."""

    def __init__(
        self,
        model: str,
        tracking_uri: str | None = None,
        device: str | None = None,
        max_batch_size: int = 8,
        batch_wait_timeout_s: float = 0.01,
    ) -> None:
        self.model = model
        self.engine = DecodeEngine.load(model, tracking_uri=tracking_uri, device=device)
        self._warm = False
        self.model = model
        logger.info("Generator replica serves %s", model)
        self._batched.set_max_batch_size(max_batch_size)
        self._batched.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def ready(self) -> dict[str, Any]:
        """What this replica serves, once its engine has produced a token (a one-token warm-up the
        first time): the controller's readiness probe."""
        if not self._warm:
            prompt = self.engine.codec.encode("Hello")
            await asyncio.to_thread(self.engine.complete, [DecodeRequest(prompt, 1)])
            self._warm = True
        return {"model": self.model}

    def info(self) -> CodecInfo:
        """What a controller needs to tokenize for this replica, and the model it loaded."""
        return self.engine.codec.info(self.model)

    async def generate(self, request: DecodeRequest) -> AsyncIterator[list[TokenStep]]:
        """Stream one request's tokens (batched with whatever else is in flight), in small groups.

        A caller that goes away early (a stop string was found, the client disconnected) cancels
        this call; the request is then marked cancelled so the decode loop drops its row instead of
        decoding it to ``max_tokens`` for no one.
        """
        group: list[TokenStep] = []
        flushed = time.monotonic()
        finished = False
        try:
            async for step in self._batched(request):
                group.append(step)
                finished = step.finish_reason is not None
                if finished or time.monotonic() - flushed >= FLUSH_S:
                    yield group
                    group, flushed = [], time.monotonic()
            if group:
                yield group
        finally:
            # The batch holds this very object (same process): the engine reads the flag each step.
            request.cancelled = request.cancelled or not finished

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01, max_concurrent_batches=2)
    async def _batched(self, requests: list[DecodeRequest]) -> AsyncIterator[list[Any]]:
        steps = self.engine.stream(requests)  # a row's last step carries its usage counters
        while True:
            # The decode step is blocking torch work: run it off the event loop.
            events = await asyncio.to_thread(next, steps, None)
            if events is None:
                return
            yield [StopIteration if step is None else step for step in events]
