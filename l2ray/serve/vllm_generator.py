"""The model replica on vLLM: `AsyncLLM` with continuous batching and the intervention as a logits
processor (`l2ray.decode.vllm_processor`), behind the same interface as the transformers `Generator`
(``ready``, ``info``, ``generate``): the controller reaches either through the same `ModelLink`, as a
deployment of its own (``graph: split``) or built inside the Ingress replica (``graph: direct``).

Why `AsyncLLM` and not `ray.serve.llm`'s server: that server is itself an OpenAI ingress over its own
engine deployment; our graph needs the controller between the HTTP surface and the engine (it
tokenizes with the student's codec, builds each request's policy, splits thinking from answer,
applies stop strings and the l2ray usage fields), and a replica that takes `DecodeRequest`s and
streams `TokenStep`s. Wrapping vLLM's own async engine in a Serve deployment gives exactly that.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from l2ray.decode.codec import Codec, CodecInfo
from l2ray.decode.types import DecodeRequest, TokenStep
from l2ray.decode.vllm_engine import engine_environment, engine_kwargs, sampling_params, token_steps
from l2ray.recipe import VllmEngineConfig
from l2ray.serve.protocol import ModelLost

logger = logging.getLogger("ray.serve")


@serve.deployment(name="Generator", max_ongoing_requests=256)
class VllmGenerator:
    """Resolves the student (as `Generator` does) and serves it from one vLLM `AsyncLLM`."""

    def __init__(self, model: str, tracking_uri: str | None, engine: VllmEngineConfig) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from l2ray.student.resolve import resolve_student

        self.model = model
        self._warm = False
        path = str(resolve_student(model, tracking_uri=tracking_uri))
        self.codec = Codec.from_pretrained(path)
        with engine_environment(engine):
            self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_kwargs(path, engine)))
        logger.info("Generator replica (vLLM) serves %s", model)

    async def ready(self) -> dict[str, Any]:
        """What this replica serves, once its engine has produced a token (a one-token warm-up the
        first time): the controller's readiness probe."""
        if not self._warm:
            request = DecodeRequest(self.codec.encode("Hello"), 1)
            async for _ in self.generate(request):
                pass
            self._warm = True
        return {"model": self.model}

    async def check_health(self) -> None:
        """Serve's periodic health check: a dead engine fails it, and Serve replaces the replica."""
        await self.engine.check_health()

    def info(self) -> CodecInfo:
        """What a controller needs to tokenize for this replica, and the model it loaded."""
        return self.codec.info(self.model)

    async def generate(self, request: DecodeRequest) -> AsyncIterator[list[TokenStep]]:
        """Stream one request's tokens in groups of ``vllm.stream_interval`` (the first token alone).

        A caller that goes away early cancels this call; the request is then aborted in the engine so
        its row stops decoding. An engine that died raises `ModelLost` (the client gets 503) instead
        of pretending the request finished.
        """
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.exceptions import EngineDeadError

        params = sampling_params(request, self.codec)
        params.output_kind = RequestOutputKind.DELTA
        policy = self.codec.policy(request)  # replays the engine-side policy for the usage counters
        request_id = uuid.uuid4().hex
        finished = False
        try:
            outputs = self.engine.generate(
                TokensPrompt(prompt_token_ids=list(request.prompt_ids)), params, request_id
            )
            async for out in outputs:
                finished = out.finished
                steps = token_steps(self.codec, out.outputs[0], policy, request.logprobs, finished)
                if steps:
                    yield steps
        except EngineDeadError as exc:
            raise ModelLost(f"the vLLM engine of {self.model} died: {exc}") from exc
        finally:
            if not finished:
                await self.engine.abort(request_id)
