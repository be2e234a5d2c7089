"""In-process generation with the intervention: one batched decode loop, streamed token by token.

`DecodeEngine` is what the serve `Generator` replica runs and what evaluation's in-process engine
calls: `DecodeRequest`s in, a `TokenStep` per row per step out (`stream`), or one `Completion` per
request (`complete`).

Example:
    >>> engine = DecodeEngine.load("builtin:tiny", device="cpu")  # doctest: +SKIP
    >>> prompt = engine.codec.chat_prompt([{"role": "user", "content": "1+1?"}])  # doctest: +SKIP
    >>> request = DecodeRequest(prompt, 64, InterventionConfig(force="zh"))  # doctest: +SKIP
    >>> [done] = engine.complete([request])  # doctest: +SKIP
    >>> done.text.startswith("<|lang:zh|>")  # doctest: +SKIP
    True
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from l2ray.decode.codec import Codec
from l2ray.decode.policy import usage_counters
from l2ray.decode.processors import PolicyBatch, default_processors
from l2ray.decode.spec import PolicySpec
from l2ray.decode.types import Completion, DecodeRequest, TokenStep


class DecodeEngine:
    """A model, its `Codec` and the batched decode loop that runs the intervention."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.codec = Codec.for_model(model, tokenizer)
        self.vocab = self.codec.vocab
        self.pad_id = self.codec.pad_id
        self.device = next(model.parameters()).device
        self._cache_field = cache_field(model)

    @classmethod
    def load(cls, model_uri: str, tracking_uri: str | None = None, device: str | None = None) -> DecodeEngine:
        """Load a student by URI (``builtin:tiny``, a folder, an HF id, ``models:/NAME@alias``)."""
        from l2ray.student.resolve import load_student

        model, tokenizer = load_student(model_uri, tracking_uri=tracking_uri, device=device)
        return cls(model, tokenizer)

    def stream(self, requests: Sequence[DecodeRequest]) -> Iterator[list[TokenStep | None]]:
        """Decode a batch; yield, per step, one `TokenStep` per row (``None`` once it finished or was
        cancelled). A row's last step carries its usage counters (`PolicyCore.counters`)."""
        batch = PolicyBatch([self.codec.spec(r) for r in requests], self.vocab, self.device)
        processors = default_processors(
            batch,
            [r.temperature for r in requests],
            [r.top_p for r in requests],
            [r.seed for r in requests],
            [r.logit_bias for r in requests],
        )
        ids, mask = self._left_pad([r.prompt_ids for r in requests])
        rows = _Rows(requests, want_top=max(r.logprobs for r in requests))
        # Grad mode is thread-local and the serve replica runs each step on a worker thread:
        # every step enters inference mode itself instead of one block around the yields.
        with torch.inference_mode():
            out = self.model(
                input_ids=ids, attention_mask=mask, position_ids=_positions(mask), use_cache=True
            )
        while True:
            with torch.inference_mode():
                logits = out.logits[:, -1, :].float()
                steps, tokens = rows.advance(
                    processors(ids, logits), logits, self.vocab.stop_ids, self.pad_id
                )
                step = torch.tensor(tokens, device=self.device).unsqueeze(1)
                ids = torch.cat([ids, step], dim=1)
                mask = torch.cat([mask, torch.ones_like(step)], dim=1)
                batch.sync(ids)  # the core counts this step's tokens before anyone reads them
                _attach_usage(steps, batch)
            yield steps
            if rows.all_finished:
                return
            with torch.inference_mode():
                out = self._forward_one(step, mask, out)

    def run(self, requests: Sequence[DecodeRequest]) -> list[list[TokenStep]]:
        """Run a batch to the end; every row's steps."""
        rows: list[list[TokenStep]] = [[] for _ in requests]
        for steps in self.stream(requests):
            for row, step in enumerate(steps):
                if step is not None:
                    rows[row].append(step)
        return rows

    def complete(self, requests: Sequence[DecodeRequest]) -> list[Completion]:
        """Run a batch to the end and return one `Completion` per request."""
        rows = self.run(requests)
        return [
            completion_from(self.codec, self.codec.spec(r), len(r.prompt_ids), row)
            for r, row in zip(requests, rows, strict=True)
        ]

    def _forward_one(self, step: torch.Tensor, mask: torch.Tensor, previous: Any) -> Any:
        """The model on one new token per row, continuing from ``previous``'s KV cache."""
        return self.model(
            input_ids=step,
            attention_mask=mask,
            position_ids=_positions(mask)[:, -1:],
            use_cache=True,
            **{self._cache_field: getattr(previous, self._cache_field)},
        )

    def _left_pad(self, prompts: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
        return ids.to(self.device), mask.to(self.device)


class _Rows:
    """Per-row bookkeeping of one batch: how many tokens each row has, which rows are done."""

    def __init__(self, requests: Sequence[DecodeRequest], want_top: int) -> None:
        self.requests = list(requests)
        self.generated = [0] * len(requests)
        self.finished = [False] * len(requests)
        self.want_top = want_top

    @property
    def all_finished(self) -> bool:
        return all(self.finished)

    def advance(
        self, scores: torch.Tensor, logits: torch.Tensor, stop_ids: Sequence[int], pad_id: int
    ) -> tuple[list[TokenStep | None], list[int]]:
        """This step's `TokenStep` per row (``None`` for a finished row) and the tokens fed back."""
        raw = torch.log_softmax(logits, dim=-1) if self.want_top else None
        tokens = scores.argmax(dim=-1).tolist()
        steps: list[TokenStep | None] = []
        for row, token in enumerate(tokens):
            request = self.requests[row]
            self.finished[row] = self.finished[row] or request.cancelled
            if self.finished[row]:
                steps.append(None)
                tokens[row] = pad_id
                continue
            step = _token_step(request, token, raw, row, self.generated[row], stop_ids)
            steps.append(step)
            self.generated[row] += 1
            self.finished[row] = step.finish_reason is not None
        return steps, tokens


def completion_from(
    codec: Codec, spec: PolicySpec, prompt_len: int, steps: Sequence[TokenStep]
) -> Completion:
    """Assemble a `Completion` from a row's steps (the last carries the usage counters)."""
    tokens = [s.token for s in steps if not s.is_stop]
    counters = dict(steps[-1].usage) if steps and steps[-1].usage else usage_counters(0, 0, 0, {})
    counters.pop("language_tokens", None)
    usage = {"prompt_tokens": prompt_len, "completion_tokens": len(tokens), **counters}
    finish = (steps[-1].finish_reason if steps else None) or "length"
    return Completion(codec.decode(tokens), finish, usage, starts_in_thinking=spec.thinking)


def _attach_usage(steps: list[TokenStep | None], batch: PolicyBatch) -> None:
    """Give the rows that finished this step their counters (one read of the core for all of them)."""
    finished = [row for row, step in enumerate(steps) if step is not None and step.finish_reason is not None]
    if finished:
        for row, usage in zip(finished, batch.counters(finished), strict=True):
            steps[row].usage = usage


def cache_field(model: Any) -> str:
    """The name of a model's KV-cache argument and output field: transformers 5.20 renamed
    ``past_key_values`` to ``cache`` (the GPU image has 5.17, this project 5.19+)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _token_step(
    request: DecodeRequest,
    token: int,
    raw: torch.Tensor | None,
    row: int,
    count: int,
    stop_ids: Sequence[int],
) -> TokenStep:
    if token in stop_ids and not request.ignore_eos:
        return TokenStep(token, finish_reason="stop", is_stop=True)
    step = TokenStep(token, finish_reason="length" if count + 1 >= request.max_tokens else None)
    if request.logprobs and raw is not None:
        values, index = raw[row].topk(request.logprobs)
        step.top = list(zip(index.tolist(), values.tolist(), strict=True))
        step.logprob = float(raw[row, token])
    return step


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


__all__ = ["DecodeEngine", "cache_field", "completion_from"]
