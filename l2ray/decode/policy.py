"""Per-request decoding policy: language-tag control and s1 budget forcing as a small state machine.

The policy never sees a model. It is asked four questions per generated token, in this order, by
both executions (the `LogitsProcessor` fast path in `processors.py` and the HTTP segment loop in
`segment.py`), which is why both make the same language choices for the same seed:

1. `forced_token()` — must this position be a given token (the rest of ``ignore_str``, the end of
   thinking when the budget is spent, the forced language's opening tag)?
2. `tag_bias(top_ids)` — given the ids of the top-``k`` logits, the additive bias for tag tokens
   (under ``alpha_mode: probability`` one random draw, only when a tag is among them and there is
   something to boost or suppress; under ``sign`` a fixed ``alpha * beta``, no draw);
3. `replace(chosen)` — s1's "ignore": a chosen end of thinking becomes ``ignore_str`` while
   ignores and budget remain;
4. `observe(token)` — the token that was emitted; updates language, switches and budget.

Example:
    >>> vocab = ReasoningVocab(tag_ids={"en": 5, "zh": 6}, think_end_id=3, stop_ids=(1,))
    >>> policy = RequestPolicy(InterventionConfig(force="zh"), vocab, seed=0)
    >>> policy.forced_token()
    6
    >>> policy.observe(6); policy.tag_bias([5, 9])
    {5: -inf}
"""

from __future__ import annotations

import json
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from l2ray.decode.config import InterventionConfig
from l2ray.errors import L2rayError
from l2ray.languages import LANGUAGES, tag_token
from l2ray.text.langmix import shares
from l2ray.thinking import THINK_END, THINK_START

BANNED = -math.inf


@dataclass(frozen=True)
class ReasoningVocab:
    """The token ids decoding control needs: language tags, end of thinking, stop tokens."""

    tag_ids: dict[str, int]
    think_end_id: int | None
    stop_ids: tuple[int, ...]
    think_start_id: int | None = None
    code_of: dict[int, str] = field(init=False, repr=False)

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


class PolicyError(L2rayError, ValueError):
    """An intervention the model's vocabulary cannot carry out (a language without a tag token)."""


class RequestPolicy:
    """Decoding state of one request: thinking or answering, language, switches, budget, ignores.

    Args:
        config: the intervention.
        vocab: token ids of the model.
        seed: seeds the policy's own random draws (independent of any sampling RNG).
        ignore_ids: token ids of ``config.ignore_str`` (required when ``num_ignore > 0``).
        thinking: whether generation starts inside ``<think>`` (the student's template opens it).
    """

    def __init__(
        self,
        config: InterventionConfig,
        vocab: ReasoningVocab,
        seed: int = 0,
        ignore_ids: Sequence[int] = (),
        thinking: bool = True,
    ) -> None:
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
        if config.num_ignore and not ignore_ids:
            raise PolicyError(f"ignore_str {config.ignore_str!r} encodes to no tokens")
        self.config = config
        self.vocab = vocab
        self.ignore_ids = tuple(ignore_ids)
        self.seed = seed
        self.rng = random.Random(seed)
        self.thinking = thinking
        self.started_thinking = thinking
        """Whether the prompt had opened the thinking block (the generated text starts inside it)."""
        self.done = False
        self.language: str | None = None
        self.switches = 0
        self.thinking_tokens = 0
        self.answer_tokens = 0
        self.ignores_left = config.num_ignore
        self.language_tokens: dict[str, int] = {}
        """Thinking tokens spent under each language's tag (the tag included)."""
        self._queue: deque[int] = deque()
        self._boost = {vocab.tag_ids[c]: config.beta for c in config.boost}
        self._boost.update({vocab.tag_ids[c]: -config.beta for c in config.suppress})
        self._tag_set = frozenset(vocab.tag_ids.values())

    # -- the four questions -------------------------------------------------------------------------

    def forced_token(self) -> int | None:
        """The token this position must be, or ``None`` when the model chooses."""
        return self.budget_forced() if self.budget_forced() is not None else self.tag_forced()

    def budget_forced(self) -> int | None:
        """Budget forcing's token for this position: the rest of ``ignore_str``, or the end of thinking."""
        if self.done or not self.thinking:
            return None
        if self._queue:
            return self._queue[0]
        budget = self.config.max_thinking_tokens
        if budget is not None and self.thinking_tokens >= budget:
            return self.vocab.think_end_id
        return None

    def tag_forced(self) -> int | None:
        """With ``force``, the thinking opens with the forced language's tag."""
        if self.done or not self.thinking or self.config.force is None or self.thinking_tokens:
            return None
        return self.vocab.tag_ids[self.config.force]

    def tag_bias(self, top_ids: Sequence[int]) -> dict[int, float]:
        """Additive logit bias for tag tokens at this position (``-inf`` bans a tag).

        ``top_ids`` are the ids of the top-``k`` logits before any bias. Under ``alpha_mode:
        probability`` a random draw is consumed only when a tag is among them and the intervention
        boosts or suppresses something; ``sign`` never draws.
        """
        if self.done or not self.thinking or not self._tag_set:
            return {}
        bias: dict[int, float] = {}
        top = {int(t) for t in top_ids[: self.config.top_k]}
        if top & self._tag_set and self._boost:
            switch = self._switch_bias()
            if self.config.top_k_rule == "each_tag":
                switch = {token: value for token, value in switch.items() if token in top}
            bias.update(switch)
        allowed = self._allowed_tags()
        if allowed is not None:
            bias.update({t: BANNED for t in self._tag_set if t not in allowed})
        return bias

    def replace(self, chosen: int) -> int:
        """s1's ignore: a chosen end of thinking becomes ``ignore_str`` while ignores and budget remain."""
        if chosen != self.vocab.think_end_id or not self.ignores_end():
            return chosen
        self.ignores_left -= 1
        self._queue.extend(self.ignore_ids[1:])
        return self.ignore_ids[0]

    def ignores_end(self) -> bool:
        """Whether an end of thinking chosen now would become ``ignore_str`` (see `replace`)."""
        if self.done or not self.thinking or not self.ignores_left:
            return False
        budget = self.config.max_thinking_tokens
        # Leave room for at least one token of renewed thinking; a budget never goes negative.
        return budget is None or self.thinking_tokens + len(self.ignore_ids) < budget

    def observe(self, token: int) -> None:
        """Record an emitted token."""
        if self.done:
            return
        if token in self.vocab.stop_ids:
            self.done = True
            return
        if self._queue and token == self._queue[0]:
            self._queue.popleft()
        if not self.thinking:
            self.answer_tokens += 1
            return
        if token == self.vocab.think_end_id:
            self.thinking = False
            self._queue.clear()
            return
        self.thinking_tokens += 1
        code = self.vocab.code_of.get(token)
        if code is not None:
            if self.language is not None and code != self.language:
                self.switches += 1
            self.language = code
        if self.language is not None:
            self.language_tokens[self.language] = self.language_tokens.get(self.language, 0) + 1

    def language_mix(self) -> dict[str, float]:
        """Share of tagged thinking tokens per language, largest first (empty before any tag)."""
        return shares(self.language_tokens)

    def counters(self) -> dict[str, Any]:
        """What a request's ``usage`` reports beyond prompt and completion tokens."""
        return {
            "thinking_tokens": self.thinking_tokens,
            "answer_tokens": self.answer_tokens,
            "switches": self.switches,
            "language_tokens": dict(self.language_tokens),
            "language_mix": self.language_mix(),
        }

    def _switch_bias(self) -> dict[int, float]:
        """The boost/suppress bias at a switch point under ``alpha_mode``."""
        if self.config.alpha_mode == "sign":
            return {token: self.config.alpha * beta for token, beta in self._boost.items()}
        # The draw is spent at every switch point whatever alpha is, so seeds stay comparable.
        return dict(self._boost) if self.rng.random() < self.config.alpha else {}

    def _allowed_tags(self) -> set[int] | None:
        if self.config.force is not None:
            return {self.vocab.tag_ids[self.config.force]}
        limit = self.config.max_switches
        if limit is not None and self.switches >= limit and self.language is not None:
            return {self.vocab.tag_ids[self.language]}
        return None


def encode_policy(policy: RequestPolicy) -> str:
    """A fresh policy as flat JSON: what an engine in another process rebuilds it from (`decode_policy`).

    >>> vocab = ReasoningVocab(tag_ids={"zh": 6}, think_end_id=3, stop_ids=(1,))
    >>> decode_policy(encode_policy(RequestPolicy(InterventionConfig(force="zh"), vocab))).forced_token()
    6
    """
    vocab = policy.vocab
    return json.dumps(
        {
            "config": policy.config.model_dump(mode="json"),
            "tag_ids": vocab.tag_ids,
            "think_end_id": vocab.think_end_id,
            "think_start_id": vocab.think_start_id,
            "stop_ids": list(vocab.stop_ids),
            "seed": policy.seed,
            "ignore_ids": list(policy.ignore_ids),
            "thinking": policy.started_thinking,
        }
    )


def decode_policy(spec: str) -> RequestPolicy:
    """The fresh `RequestPolicy` `encode_policy` wrote; raises `PolicyError` on a malformed spec."""
    try:
        fields = json.loads(spec)
        vocab = ReasoningVocab(
            tag_ids={str(c): int(i) for c, i in fields["tag_ids"].items()},
            think_end_id=fields["think_end_id"],
            stop_ids=tuple(int(i) for i in fields["stop_ids"]),
            think_start_id=fields["think_start_id"],
        )
        config = InterventionConfig.model_validate(fields["config"])
        return RequestPolicy(
            config,
            vocab,
            int(fields["seed"]),
            [int(i) for i in fields["ignore_ids"]],
            bool(fields["thinking"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        if isinstance(exc, PolicyError):
            raise
        raise PolicyError(f"malformed l2ray policy spec ({exc}); build it with encode_policy") from None


def opens_thinking(token_ids: Sequence[int], vocab: ReasoningVocab) -> bool:
    """Whether a prompt ends inside a thinking block (its last ``<think>`` is after its last ``</think>``)."""
    last_start = last_end = -1
    for index, token in enumerate(token_ids):
        if token == vocab.think_start_id:
            last_start = index
        elif token == vocab.think_end_id:
            last_end = index
    return last_start > last_end
