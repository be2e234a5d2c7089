"""What an engine needs to run one request's intervention, decided once when the request is admitted.

- `ReasoningVocab` — the model's constants (tag ids, ``</think>``, stop ids): read once per engine.
- `PolicySpec` — one request's settings: the `InterventionConfig`, its seed, ``ignore_str``'s token
  ids and whether the prompt opened the thinking. Checked against the vocabulary once (`check`), it
  travels as itself inside a process and as one flat JSON string to a vLLM engine (`to_json`).
- `switch_draw` — the random draw of ``alpha_mode: probability``, counter-based (a hash of the
  request's seed and the draw's number), so the Python reference (`RequestPolicy`) and the tensor
  core (`PolicyCore`) draw the same numbers without sharing a generator. It takes Python ints and
  int64 tensors alike.

Example:
    >>> vocab = ReasoningVocab(tag_ids={"en": 5, "zh": 6}, think_end_id=3, stop_ids=(1,))
    >>> spec = PolicySpec(InterventionConfig(boost=["zh"], alpha=0.5), seed=7)
    >>> spec.check(vocab)
    >>> PolicySpec.from_json(spec.to_json()) == spec
    True
    >>> [switch_draw(spec.draw_key, i) < spec.alpha_threshold for i in range(6)]
    [False, False, False, True, True, False]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import ValidationError

from l2ray.errors import L2rayError
from l2ray.languages import LANGUAGES, tag_token
from l2ray.recipe import InterventionConfig
from l2ray.thinking import THINK_END, THINK_START

MASK32 = 0xFFFF_FFFF
DRAW_SPACE = 1 << 32
"""Draws are uniform integers in ``[0, DRAW_SPACE)``; a switch point applies its bias when the draw
is below `PolicySpec.alpha_threshold`."""

Int = TypeVar("Int")  # a Python int or an int64 tensor: the hash is written once for both


class PolicyError(L2rayError, ValueError):
    """An intervention the model's vocabulary cannot carry out (a language without a tag token)."""


@dataclass(frozen=True)
class ReasoningVocab:
    """The token ids decoding control needs: language tags, end of thinking, stop tokens."""

    tag_ids: dict[str, int]
    think_end_id: int | None
    stop_ids: tuple[int, ...]
    think_start_id: int | None = None
    code_of: dict[int, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "code_of", {i: c for c, i in self.tag_ids.items()})

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, stop_ids: Sequence[int] | None = None) -> ReasoningVocab:
        """Read tag and think ids from ``tokenizer``; tags it lacks are simply absent.

        ``stop_ids`` default to the tokenizer's EOS and pad tokens.
        """
        vocab = tokenizer.get_vocab()
        tags = {code: vocab[tag_token(code)] for code in LANGUAGES if tag_token(code) in vocab}
        if stop_ids is None:
            stop_ids = [i for i in (tokenizer.eos_token_id, tokenizer.pad_token_id) if i is not None]
        return cls(
            tag_ids=tags,
            think_end_id=vocab.get(THINK_END),
            stop_ids=tuple(dict.fromkeys(stop_ids)),
            think_start_id=vocab.get(THINK_START),
        )


@dataclass(frozen=True)
class PolicySpec:
    """One request's intervention as an engine runs it.

    Args:
        config: the intervention.
        seed: seeds the policy's own draws (independent of any sampling RNG).
        ignore_ids: token ids of ``config.ignore_str`` (required when ``num_ignore > 0``).
        thinking: whether generation starts inside ``<think>`` (the prompt opened it).
    """

    config: InterventionConfig
    seed: int = 0
    ignore_ids: tuple[int, ...] = ()
    thinking: bool = True

    def check(self, vocab: ReasoningVocab) -> None:
        """Raise `PolicyError` when the model's vocabulary cannot carry this intervention out."""
        config = self.config
        wanted = [*config.boost, *config.suppress, *([config.force] if config.force else [])]
        missing = [code for code in wanted if code not in vocab.tag_ids]
        if missing:
            raise PolicyError(
                f"intervention names languages {missing} whose tags {[tag_token(c) for c in missing]} the "
                "model's tokenizer lacks; serve a student trained with language tags"
            )
        needs_end = config.max_thinking_tokens is not None or config.num_ignore > 0
        if needs_end and vocab.think_end_id is None:
            raise PolicyError(f"budget forcing needs a {THINK_END} token; the model's tokenizer has none")
        if config.num_ignore and not self.ignore_ids:
            raise PolicyError(f"ignore_str {config.ignore_str!r} encodes to no tokens")

    def switch_bias(self) -> dict[str, float]:
        """The bias a switch point adds to each boosted (+) or suppressed (−) language's tag when it
        applies; under ``alpha_mode: sign`` scaled by ``alpha``."""
        config = self.config
        scale = config.alpha if config.alpha_mode == "sign" else 1.0
        bias = {code: scale * config.beta for code in config.boost}
        bias.update({code: -scale * config.beta for code in config.suppress})
        return bias

    @property
    def draws(self) -> bool:
        """Whether switch points spend a draw (``alpha_mode: probability`` with something to bias)."""
        return self.config.alpha_mode == "probability" and bool(self.config.boost or self.config.suppress)

    @property
    def alpha_threshold(self) -> int:
        """A switch point's draw applies the bias when below this (``alpha`` of `DRAW_SPACE`)."""
        return round(self.config.alpha * DRAW_SPACE) if self.draws else DRAW_SPACE

    @property
    def draw_key(self) -> int:
        """The seed folded into 32 bits, the key of `switch_draw`."""
        seed = self.seed % (1 << 64)
        return _fmix32(_fmix32((seed & MASK32) ^ 0x9E3779B9) ^ (seed >> 32))

    def to_json(self) -> str:
        """One flat string (vLLM's ``extra_args`` values must be flat); `from_json` reads it back."""
        return json.dumps(
            {
                "config": self.config.model_dump(mode="json", exclude_defaults=True),
                "seed": self.seed,
                "ignore_ids": list(self.ignore_ids),
                "thinking": self.thinking,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> PolicySpec:
        """The spec `to_json` wrote; raises `PolicyError` on anything else."""
        try:
            fields = json.loads(text)
            return cls(
                InterventionConfig.model_validate(fields["config"]),
                _integer(fields["seed"]),
                tuple(_integer(i) for i in fields["ignore_ids"]),
                bool(fields["thinking"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as exc:
            detail = str(exc).splitlines()[0]
            raise PolicyError(
                f"malformed l2ray policy spec ({detail}); build it with PolicySpec.to_json"
            ) from None


def switch_draw(key: Int, index: Int) -> Int:
    """The ``index``-th draw under ``key`` (`PolicySpec.draw_key`): a uniform integer in ``[0, 2**32)``.

    >>> switch_draw(123, 0), switch_draw(123, 1)
    (2933826937, 3907303489)
    """
    return _fmix32(_mul32((index + 1) & MASK32, 0x9E3779B1) ^ key)


def _fmix32(h: Int) -> Int:
    """MurmurHash3's 32-bit finaliser."""
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def _mul32(x: Int, constant: int) -> Int:
    """``x * constant mod 2**32`` for ``x < 2**32``, in two halves so an int64 tensor never overflows."""
    low = x * (constant & 0xFFFF)
    high = ((x * (constant >> 16)) & 0xFFFF) * 0x10000
    return (low + high) & MASK32


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


__all__ = ["DRAW_SPACE", "PolicyError", "PolicySpec", "ReasoningVocab", "switch_draw"]
