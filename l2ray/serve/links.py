"""How the reasoning controller reaches its model replica: `ModelLink`.

Two graphs, one controller:

- **split** (`HandleLink`): the Ingress calls a Generator deployment through its handle; every group
  of tokens crosses a Ray process boundary, and the Ingress outlives a replica that dies (it answers
  503 for it).
- **direct** (`LocalLink`): the generator object lives in the Ingress replica's own process, as in
  vLLM's own server (API process + engine core): no hop per token; Serve's proxy answers for a
  replica that dies.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol

from ray.serve import Deployment
from ray.serve.handle import DeploymentHandle

from l2ray.decode.codec import CodecInfo
from l2ray.decode.types import DecodeRequest, TokenStep
from l2ray.recipe import ServeConfig


class ModelLink(Protocol):
    """What the controller asks of a model replica."""

    async def ready(self) -> dict[str, Any]:
        """What the replica serves, once its engine has produced a token."""
        ...

    async def info(self) -> CodecInfo:
        """The replica's tokenizer side and the model it loaded."""
        ...

    def generate(self, request: DecodeRequest) -> AsyncIterator[list[TokenStep]]:
        """The request's tokens in groups; closing the iterator early stops the row."""
        ...

    async def check_health(self) -> None:
        """Raise when this process's engine is dead (Serve's health check of the Ingress)."""
        ...


class HandleLink:
    """A Generator deployment, through its handle (the split graph)."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self.handle = handle

    async def ready(self) -> dict[str, Any]:
        response = self.handle.ready.remote()
        try:
            return await response
        except asyncio.CancelledError:  # the probe gave up: the replica need not answer it
            response.cancel()
            raise

    async def info(self) -> CodecInfo:
        return await self.handle.info.remote()

    async def generate(self, request: DecodeRequest) -> AsyncIterator[list[TokenStep]]:
        response = self.handle.options(stream=True).generate.remote(request)
        finished = False
        try:
            async for group in response:
                finished = finished or any(step.finish_reason is not None for step in group)
                yield group
        finally:
            if not finished:
                response.cancel()  # the replica frees the row (see Generator.generate)

    async def check_health(self) -> None:
        """Nothing of this process's: Serve checks the Generator replicas themselves."""


class LocalLink:
    """A generator object in this process (the direct graph): `Generator` or `VllmGenerator`'s class."""

    def __init__(self, generator: Any) -> None:
        self.generator = generator

    async def ready(self) -> dict[str, Any]:
        return await self.generator.ready()

    async def info(self) -> CodecInfo:
        return self.generator.info()

    def generate(self, request: DecodeRequest) -> AsyncIterator[list[TokenStep]]:
        return self.generator.generate(request)  # its own finally frees the row when closed early

    async def check_health(self) -> None:
        check = getattr(self.generator, "check_health", None)  # the transformers engine has none
        if check is not None:
            await check()


def model_link(generator: DeploymentHandle | None, config: ServeConfig, model: str) -> ModelLink | None:
    """How an Ingress replica reaches its model: the Generator deployment's handle; in the direct graph
    a generator built in this process (loading ``model``); None with ``generator_url``."""
    if generator is not None:
        return HandleLink(generator)
    if config.graph != "direct":  # split with generator_url: no replica (direct refuses generator_url)
        return None
    deployment, generator_args = generator_parts(config, model)
    return LocalLink(deployment.func_or_class(*generator_args))


def generator_parts(config: ServeConfig, model: str) -> tuple[Deployment, tuple[Any, ...]]:
    """The Generator deployment of ``config.engine`` and its constructor's arguments, loading ``model``."""
    if config.engine == "vllm":
        from l2ray.serve.vllm_generator import VllmGenerator  # imports vllm only when asked for

        return VllmGenerator, (model, config.tracking_uri, config.vllm)
    from l2ray.serve.generator import Generator

    generator_args = (
        model,
        config.tracking_uri,
        config.device,
        config.max_batch_size,
        config.batch_wait_timeout_s,
    )
    return Generator, generator_args
