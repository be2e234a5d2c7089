"""In-process generation with the intervention: one batched decode loop, streamed token by token.

`DecodeEngine` is what the serve `Generator` replica runs; `LocalGenerator` is the same engine
behind the simple contract evaluation uses (chat conversations in, `Completion`s out).

Example:
    >>> gen = LocalGenerator("runs/demo/student")  # doctest: +SKIP
    >>> chat = [[{"role": "user", "content": "1+1?"}]]
    >>> [c] = gen.generate(chat, InterventionConfig(force="zh"), max_tokens=64)  # doctest: +SKIP
    >>> c.text.startswith("<|lang:zh|>")  # doctest: +SKIP
    True
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from l2ray.decode.config import InterventionConfig
from l2ray.decode.policy import ReasoningVocab, RequestPolicy, opens_thinking
from l2ray.decode.processors import PolicyBatch, default_processors
from l2ray.student.tokens import THINK_START


@dataclass
class Completion:
    """One generated assistant turn and what it cost (see the contract in the brief)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    thinking_tokens: int
    answer_tokens: int
    finish_reason: str
    switches: int
    language_mix: dict[str, float] = field(default_factory=dict)


@dataclass
class DecodeRequest:
    """One row of a batch: token ids in, limits and intervention.

    ``logprobs`` asks for that many top alternatives per token, from the distribution *before* any
    processor (what the HTTP segment loop needs to find switch points). ``cancelled`` may be set
    while the row decodes (by whoever holds the same object, in the same process): the row ends at
    the next step without further events, so a caller that stopped listening (a stop string, a
    disconnect) does not keep a batch slot busy up to ``max_tokens``.
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


@dataclass
class TokenEvent:
    """One generated token of one row; ``finish_reason`` is set on the row's last event."""

    token: int
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None
    finish_reason: str | None = None
    is_stop: bool = False
    """A stop token (EOS): it ends the row and is not part of the completion."""


class Codec:
    """Tokenizer-side knowledge of a model: prompts, policies, stop tokens, context length.

    The serve controller holds one (it needs no weights); `DecodeEngine` holds one too.
    """

    def __init__(self, tokenizer: Any, stop_ids: Sequence[int], context_length: int) -> None:
        self.tokenizer = tokenizer
        self.vocab = ReasoningVocab.from_tokenizer(tokenizer, list(stop_ids))
        self.context_length = context_length
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.vocab.stop_ids[0]

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of a conversation's generation prompt, always ending inside ``<think>``.

        The student's template opens ``<think>\\n`` itself; for a template that does not, it is
        appended so every model starts generation thinking.
        """
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if not text.rstrip().endswith(THINK_START):
            text += f"{THINK_START}\n"
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode(self, text: str) -> list[int]:
        """Token ids of raw text (no special tokens added)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def policy(self, request: DecodeRequest) -> RequestPolicy:
        """The request's policy; raises `PolicyError` when the model cannot carry it out."""
        config = request.intervention
        return RequestPolicy(
            config,
            self.vocab,
            seed=request.seed,
            ignore_ids=self.encode(config.ignore_str) if config.num_ignore else (),
            thinking=opens_thinking(request.prompt_ids, self.vocab),
        )


class DecodeEngine:
    """A model, its `Codec` and the batched decode loop that runs the intervention."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        eos = model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        stops = [i for i in (*eos, tokenizer.eos_token_id, tokenizer.pad_token_id) if i is not None]
        context = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
        self.codec = Codec(tokenizer, stops, context)
        self.vocab = self.codec.vocab
        self.pad_id = self.codec.pad_id
        self.device = next(model.parameters()).device

    @classmethod
    def load(cls, model_uri: str, tracking_uri: str | None = None, device: str | None = None) -> DecodeEngine:
        """Load a student by URI (``builtin:tiny``, a folder, an HF id, ``models:/NAME@alias``)."""
        from l2ray.student.resolve import load_student

        model, tokenizer = load_student(model_uri, tracking_uri=tracking_uri, device=device)
        return cls(model, tokenizer)

    def stream(
        self, requests: Sequence[DecodeRequest], policies: Sequence[RequestPolicy] | None = None
    ) -> Iterator[list[TokenEvent | None]]:
        """Decode a batch; yield, per step, one event per row (``None`` once it finished or was cancelled).

        ``policies`` (from `policy`) may be passed in to read their counters afterwards.
        """
        policies = list(policies) if policies is not None else [self.codec.policy(r) for r in requests]
        batch = PolicyBatch(policies)
        processors = default_processors(
            batch,
            [r.temperature for r in requests],
            [r.top_p for r in requests],
            [r.seed for r in requests],
            [r.logit_bias for r in requests],
        )
        ids, mask = self._left_pad([r.prompt_ids for r in requests])
        generated = [0] * len(requests)
        finished = [False] * len(requests)
        want_top = max(r.logprobs for r in requests)
        # Grad mode is thread-local and the serve replica runs each step on a worker thread:
        # every step enters inference mode itself instead of one block around the yields.
        with torch.inference_mode():
            out = self.model(
                input_ids=ids, attention_mask=mask, position_ids=_positions(mask), use_cache=True
            )
        while True:
            with torch.inference_mode():
                logits = out.logits[:, -1, :].float()
                raw = torch.log_softmax(logits, dim=-1) if want_top else None
                scores = processors(ids, logits.clone())
                tokens = scores.argmax(dim=-1).tolist()
                events: list[TokenEvent | None] = []
                for row, token in enumerate(tokens):
                    finished[row] = finished[row] or requests[row].cancelled
                    if finished[row]:
                        events.append(None)
                        tokens[row] = self.pad_id
                        continue
                    events.append(self._event(requests[row], token, raw, row, generated[row]))
                    generated[row] += 1
                    finished[row] = events[-1].finish_reason is not None
                step = torch.tensor(tokens, device=self.device).unsqueeze(1)
                ids = torch.cat([ids, step], dim=1)
                mask = torch.cat([mask, torch.ones_like(step)], dim=1)
                batch.sync(ids)  # policies count this step's tokens before anyone reads them
            yield events
            if all(finished):
                return
            with torch.inference_mode():
                out = self.model(
                    input_ids=step,
                    attention_mask=mask,
                    position_ids=_positions(mask)[:, -1:],
                    cache=out.cache,
                    use_cache=True,
                )

    def run(
        self, requests: Sequence[DecodeRequest], policies: Sequence[RequestPolicy] | None = None
    ) -> list[list[TokenEvent]]:
        """Run a batch to the end; every row's events."""
        rows: list[list[TokenEvent]] = [[] for _ in requests]
        for events in self.stream(requests, policies):
            for row, event in enumerate(events):
                if event is not None:
                    rows[row].append(event)
        return rows

    def complete(self, requests: Sequence[DecodeRequest]) -> list[Completion]:
        """Run a batch to the end and return one `Completion` per request."""
        policies = [self.codec.policy(r) for r in requests]
        rows = self.run(requests, policies)
        return [
            completion_from(self.tokenizer, len(r.prompt_ids), row, policy)
            for r, row, policy in zip(requests, rows, policies, strict=True)
        ]

    def _event(
        self, request: DecodeRequest, token: int, raw: torch.Tensor | None, row: int, count: int
    ) -> TokenEvent:
        if token in self.vocab.stop_ids and not request.ignore_eos:
            return TokenEvent(token, finish_reason="stop", is_stop=True)
        event = TokenEvent(token, finish_reason="length" if count + 1 >= request.max_tokens else None)
        if request.logprobs and raw is not None:
            values, index = raw[row].topk(request.logprobs)
            event.top = list(zip(index.tolist(), values.tolist(), strict=True))
            event.logprob = float(raw[row, token])
        return event

    def _left_pad(self, prompts: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
        return ids.to(self.device), mask.to(self.device)


class LocalGenerator:
    """Generate chat completions in-process with the intervention (what evaluation calls).

    Args:
        model_path: anything `l2ray.student.resolve.resolve_student` accepts.
        device: ``cpu``, ``cuda``…; default cuda when available.
        tracking_uri: MLflow tracking URI for ``models:/`` paths.
    """

    def __init__(self, model_path: str, device: str | None = None, tracking_uri: str | None = None) -> None:
        self.engine = DecodeEngine.load(model_path, tracking_uri=tracking_uri, device=device)

    def generate(
        self,
        conversations: list[list[dict[str, str]]],
        intervention: InterventionConfig,
        max_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> list[Completion]:
        """One `Completion` per conversation, decoded as one batch; conversation ``i`` uses ``seed + i``."""
        if not conversations:
            return []
        requests = [
            DecodeRequest(
                self.engine.codec.chat_prompt(messages),
                max_tokens=max_tokens,
                intervention=intervention,
                temperature=temperature,
                seed=seed + index,
            )
            for index, messages in enumerate(conversations)
        ]
        return self.engine.complete(requests)


def completion_from(
    tokenizer: Any, prompt_len: int, events: Sequence[TokenEvent], policy: RequestPolicy
) -> Completion:
    """Assemble a `Completion` from a row's events and its policy's counters."""
    tokens = [e.token for e in events if not e.is_stop]
    return Completion(
        text=tokenizer.decode(tokens, skip_special_tokens=False),
        prompt_tokens=prompt_len,
        completion_tokens=len(tokens),
        thinking_tokens=policy.thinking_tokens,
        answer_tokens=policy.answer_tokens,
        finish_reason=(events[-1].finish_reason if events else None) or "length",
        switches=policy.switches,
        language_mix=policy.language_mix(),
    )


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)
