"""A local teacher on vLLM (``teacher.kind: vllm``): e.g. an R1-distilled model on the cluster's GPUs.

One `AsyncLLM` per synthesis actor: the actor's concurrent requests (``teacher.concurrency``) share
one continuous batch. It sits behind the same `TeacherClient` as the other teachers, so the response
cache and verification apply unchanged. Settings of the engine are `l2ray.decode.vllm_engine`'s
defaults (one place configures vLLM); ``teacher.model`` is an HF id or a local folder.

Example:
    >>> teacher = VllmTeacher("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")  # doctest: +SKIP
"""

from __future__ import annotations

import uuid
from typing import Any

from l2ray.teacher.base import Message, SamplingParams, TeacherError, TeacherReply, Usage


class VllmTeacher:
    """Chat-templated generation with vLLM's async engine, started on first use."""

    def __init__(self, model: str, seed: int = 0, engine: dict[str, Any] | None = None) -> None:
        self.model = model
        self.seed = seed
        self.engine_settings = engine or {}
        self._engine: Any = None
        self._tokenizer: Any = None

    async def complete(
        self, messages: list[Message], params: SamplingParams, fingerprint: str | None = None
    ) -> TeacherReply:
        from vllm import SamplingParams as VllmSampling
        from vllm.inputs import TokensPrompt

        engine = self._started()
        prompt = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
        sampling = VllmSampling(
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            seed=self.seed if params.temperature > 0 else None,
            detokenize=False,  # decoded once below, with the model's own tokenizer (as the other teachers)
        )
        final = None
        ids = list(prompt["input_ids"])
        async for output in engine.generate(TokensPrompt(prompt_token_ids=ids), sampling, uuid.uuid4().hex):
            final = output
        choice = final.outputs[0] if final is not None and final.outputs else None
        text = self._tokenizer.decode(list(choice.token_ids), skip_special_tokens=True) if choice else ""
        if not text.strip():
            raise TeacherError("empty_content", f"{self.model} generated no text")
        usage = Usage(len(ids), len(choice.token_ids))
        return TeacherReply(text=text, usage=usage, finish_reason=choice.finish_reason or "stop")

    async def aclose(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

    def _started(self) -> Any:
        if self._engine is None:
            from transformers import AutoTokenizer
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM

            from l2ray.decode.vllm_engine import engine_environment, engine_kwargs
            from l2ray.recipe import VllmEngineConfig

            config = VllmEngineConfig.model_validate(self.engine_settings)
            kwargs = engine_kwargs(self.model, config)
            kwargs.pop("logits_processors")  # a teacher decodes without the student's intervention
            self._tokenizer = AutoTokenizer.from_pretrained(self.model)
            with engine_environment(config):
                self._engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))
        return self._engine
