"""The tokenizer side of a model: prompts, policies, stop tokens and context length — no weights.

The serve controller holds a `Codec` (it tokenizes and builds policies, while the weights live in the
Generator replica); the in-process engine holds one too. `Codec.from_pretrained` is the one loader of
a model's tokenizer, stop tokens and context length from its folder.

Example:
    >>> codec = Codec.from_pretrained("runs/demo/cache/students/tiny-…")  # doctest: +SKIP
    >>> codec.chat_prompt([{"role": "user", "content": "1+1?"}])[-2:]  # doctest: +SKIP
    [5, 198]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from l2ray.decode.policy import RequestPolicy, opens_thinking
from l2ray.decode.spec import PolicySpec, ReasoningVocab
from l2ray.decode.types import DecodeRequest
from l2ray.thinking import THINK_START

UNBOUNDED_CONTEXT = 1 << 30
"""The context length of a model whose config states none."""
SAMPLING_DEFAULTS = {"temperature": 1.0, "top_p": 1.0}
"""OpenAI's defaults, for a request and a model that set none."""


@dataclass(frozen=True)
class CodecInfo:
    """A `Codec` as it travels between processes (a Generator replica's ``info`` to the controller):
    the tokenizer, the stop ids, the context length and the sampling defaults, typed, no weights."""

    tokenizer: Any
    stop_ids: tuple[int, ...]
    context_length: int
    sampling: dict[str, float]
    model: str = ""

    def codec(self) -> Codec:
        return Codec(self.tokenizer, self.stop_ids, self.context_length, self.sampling)


class Codec:
    """Tokenizer-side knowledge of a model (see the module docstring).

    ``sampling`` holds the model's own sampling defaults (``temperature``, ``top_p``: what its
    generation config sets explicitly, else OpenAI's 1.0), for requests that leave them out.
    """

    def __init__(
        self,
        tokenizer: Any,
        stop_ids: Sequence[int],
        context_length: int,
        sampling: dict[str, float] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.vocab = ReasoningVocab.from_tokenizer(tokenizer, list(stop_ids))
        self.context_length = context_length
        self.sampling = {**SAMPLING_DEFAULTS, **(sampling or {})}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.vocab.stop_ids[0]

    @classmethod
    def from_pretrained(cls, path: str) -> Codec:
        """Tokenizer, generation config and model config of a saved model (no weights are read)."""
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig

        tokenizer = AutoTokenizer.from_pretrained(path)
        try:
            generation = GenerationConfig.from_pretrained(path)
        except OSError:  # a model saved without a generation config
            generation = None
        eos = generation.eos_token_id if generation is not None else None
        config = AutoConfig.from_pretrained(path)
        return cls(tokenizer, stop_ids(eos, tokenizer), context_length(config), sampling_defaults(generation))

    @classmethod
    def for_model(cls, model: Any, tokenizer: Any) -> Codec:
        """The codec of a model already in memory."""
        generation = model.generation_config
        return cls(
            tokenizer,
            stop_ids(generation.eos_token_id, tokenizer),
            context_length(model.config),
            sampling_defaults(generation),
        )

    def info(self, model: str = "") -> CodecInfo:
        """What another process rebuilds this codec from (`CodecInfo.codec`), without weights;
        ``model`` names what it belongs to (a Serve replica reports the version it loaded)."""
        return CodecInfo(
            self.tokenizer, tuple(self.vocab.stop_ids), self.context_length, dict(self.sampling), model
        )

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of a conversation's generation prompt; a reasoning student's ends inside ``<think>``.

        A student's template opens ``<think>\n`` itself (`l2ray.student.tokens.open_thinking`); for one
        whose template does not, it is appended, so every reasoning model starts generation thinking.
        A model without a ``<think>`` token (a base model before training) gets its plain prompt: all
        it writes is the answer.
        """
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if self.vocab.think_start_id is not None and not text.rstrip().endswith(THINK_START):
            text += f"{THINK_START}\n"
        return self.encode(text)

    def encode(self, text: str) -> list[int]:
        """Token ids of raw text (no special tokens added)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, tokens: Sequence[int]) -> str:
        """Text of token ids, special tokens (tags, ``</think>``) kept."""
        return self.tokenizer.decode(list(tokens), skip_special_tokens=False)

    def spec(self, request: DecodeRequest) -> PolicySpec:
        """The request's checked `PolicySpec`, built once and kept on the request (the engines, the
        replica it travels to and the usage replay read it there); raises `PolicyError` when the
        model cannot carry the intervention out."""
        if request.spec is None:
            config = request.intervention
            spec = PolicySpec(
                config,
                seed=request.seed,
                ignore_ids=tuple(self.encode(config.ignore_str)) if config.num_ignore else (),
                thinking=opens_thinking(request.prompt_ids, self.vocab),
            )
            spec.check(self.vocab)
            request.spec = spec
        return request.spec

    def policy(self, request: DecodeRequest) -> RequestPolicy:
        """A fresh reference policy of the request (the segment loop, the usage replay)."""
        return RequestPolicy.from_spec(self.spec(request), self.vocab)


def stop_ids(eos: int | Sequence[int] | None, tokenizer: Any) -> list[int]:
    """The tokens that end generation: the generation config's EOS ids, the tokenizer's EOS and pad."""
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    return [i for i in (*eos, tokenizer.eos_token_id, tokenizer.pad_token_id) if i is not None]


def sampling_defaults(generation: Any) -> dict[str, float]:
    """The ``temperature`` and ``top_p`` a model's generation config sets explicitly (as vLLM's server
    reads them); what it leaves unset falls back to OpenAI's defaults (`SAMPLING_DEFAULTS`)."""
    diff = generation.to_diff_dict() if generation is not None else {}
    return {k: float(diff[k]) for k in SAMPLING_DEFAULTS if isinstance(diff.get(k), int | float)}


def context_length(config: Any) -> int:
    """``max_position_embeddings`` of a model config (unbounded when it has none)."""
    return int(getattr(config, "max_position_embeddings", 0) or UNBOUNDED_CONTEXT)


__all__ = ["SAMPLING_DEFAULTS", "Codec", "context_length", "sampling_defaults", "stop_ids"]
