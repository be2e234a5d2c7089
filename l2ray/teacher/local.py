"""A local transformers model as the teacher (any HF id or folder, CPU or GPU).

Generation runs in a worker thread, one request at a time per model (concurrent ``generate`` calls
on one model only contend for the same device). Meant for small local models; for throughput put a
vLLM server behind the OpenAI-compatible teacher instead.

Example:
    >>> teacher = TransformersTeacher("Qwen/Qwen2.5-0.5B-Instruct", device="cpu")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from l2ray.teacher.base import Message, SamplingParams, TeacherError, TeacherReply, Usage


class TransformersTeacher:
    """Chat-templated generation with a causal LM loaded by ``AutoModelForCausalLM``."""

    def __init__(self, model: str, device: str | None = None, seed: int = 0) -> None:
        self.model = model
        self.device = device
        self.seed = seed
        self._loaded: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    async def complete(
        self, messages: list[Message], params: SamplingParams, fingerprint: str | None = None
    ) -> TeacherReply:
        return await asyncio.to_thread(self._generate, messages, params)

    async def aclose(self) -> None:
        self._loaded = None

    def _generate(self, messages: list[Message], params: SamplingParams) -> TeacherReply:
        import torch

        with self._lock:
            model, tokenizer = self._load()
            inputs = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            ).to(model.device)
            sample = params.temperature > 0
            torch.manual_seed(self.seed)
            output = model.generate(
                **inputs,
                max_new_tokens=params.max_tokens,
                do_sample=sample,
                temperature=params.temperature if sample else None,
                top_p=params.top_p if sample else None,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
        prompt_len = inputs["input_ids"].shape[1]
        new_tokens = output[0][prompt_len:]
        text = tokenizer.decode(new_tokens, skip_special_tokens=True)
        if not text.strip():
            raise TeacherError("empty_content", f"{self.model} generated no text")
        finish = "length" if len(new_tokens) >= params.max_tokens else "stop"
        return TeacherReply(text=text, usage=Usage(prompt_len, len(new_tokens)), finish_reason=finish)

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            tokenizer = AutoTokenizer.from_pretrained(self.model)
            model = AutoModelForCausalLM.from_pretrained(self.model).to(device).eval()
            self._loaded = (model, tokenizer)
        return self._loaded
