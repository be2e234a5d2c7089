"""Per-request decoding policy: language-tag control and s1 budget forcing as a small state machine.

`RequestPolicy` is the readable reference of the intervention, one request at a time: the tensor
core (`l2ray.decode.core.PolicyCore`) runs the same state machine for a whole batch on the device and
must agree with it token for token (tests/decode/test_core.py). It stays where one request is
handled at a time: the HTTP segment loop (`segment.py`) and the usage counters a caller replays over
a request's tokens. It never sees a model. It is asked four questions per generated token, in this
order:

1. `forced_token()` — must this position be a given token (the rest of ``ignore_str``, the end of
   thinking when the budget is spent, the forced language's opening tag)?
2. `tag_bias(top_ids)` — given the ids of the top-``k`` logits, the additive bias for tag tokens
   (under ``alpha_mode: probability`` one draw, only when a tag is among them and there is
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

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

from l2ray.decode.spec import PolicySpec, ReasoningVocab, switch_draw
from l2ray.recipe import InterventionConfig
from l2ray.text.langmix import shares

BANNED = -math.inf


class RequestPolicy:
    """Decoding state of one request: thinking or answering, language, switches, budget, ignores.

    Args:
        config: the intervention.
        vocab: token ids of the model.
        seed: seeds the policy's own draws (independent of any sampling RNG).
        ignore_ids: token ids of ``config.ignore_str`` (required when ``num_ignore > 0``).
        thinking: whether generation starts inside ``<think>`` (the student's template opens it).

    Raises `PolicyError` when the vocabulary cannot carry the intervention out.
    """

    def __init__(
        self,
        config: InterventionConfig,
        vocab: ReasoningVocab,
        seed: int = 0,
        ignore_ids: Sequence[int] = (),
        thinking: bool = True,
    ) -> None:
        self.spec = PolicySpec(config, seed, tuple(ignore_ids), thinking)
        self.spec.check(vocab)
        self.config = config
        self.vocab = vocab
        self.ignore_ids = self.spec.ignore_ids
        self.thinking = thinking
        self.done = False
        self.language: str | None = None
        self.switches = 0
        self.thinking_tokens = 0
        self.answer_tokens = 0
        self.ignores_left = config.num_ignore
        self.draws_spent = 0
        self.language_tokens: dict[str, int] = {}
        """Thinking tokens spent under each language's tag (the tag included)."""
        self._queue: deque[int] = deque()
        self._boost = {vocab.tag_ids[code]: bias for code, bias in self.spec.switch_bias().items()}
        self._tag_set = frozenset(vocab.tag_ids.values())

    @classmethod
    def from_spec(cls, spec: PolicySpec, vocab: ReasoningVocab) -> RequestPolicy:
        """The fresh policy of a spec."""
        return cls(spec.config, vocab, spec.seed, spec.ignore_ids, spec.thinking)

    @property
    def started_thinking(self) -> bool:
        """Whether the prompt had opened the thinking block (the generated text starts inside it)."""
        return self.spec.thinking

    # -- the four questions -------------------------------------------------------------------------

    def forced_token(self) -> int | None:
        """The token this position must be, or ``None`` when the model chooses."""
        budget = self.budget_forced()
        return budget if budget is not None else self.tag_forced()

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
        probability`` a draw is spent only when a tag is among them and the intervention
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
        if token == self.vocab.think_end_id:  # the answer's first token: thinking + answer = every token
            self.thinking = False
            self._queue.clear()
            self.answer_tokens += 1
            return
        self.thinking_tokens += 1
        code = self.vocab.code_of.get(token)
        if code is not None:
            if self.language is not None and code != self.language:
                self.switches += 1
            self.language = code
        if self.language is not None:
            self.language_tokens[self.language] = self.language_tokens.get(self.language, 0) + 1

    def tag_mix(self) -> dict[str, float]:
        """Share of tagged thinking tokens per language, largest first (empty before any tag)."""
        return shares(self.language_tokens)

    def counters(self) -> dict[str, Any]:
        """What a request's ``usage`` reports beyond prompt and completion tokens."""
        return usage_counters(self.thinking_tokens, self.answer_tokens, self.switches, self.language_tokens)

    def _switch_bias(self) -> dict[int, float]:
        """The boost/suppress bias at a switch point: always under ``sign``, else when the draw says so.
        The draw is spent at every switch point whatever alpha is, so seeds stay comparable."""
        if not self.spec.draws:
            return dict(self._boost)
        draw = switch_draw(self.spec.draw_key, self.draws_spent)
        self.draws_spent += 1
        return dict(self._boost) if draw < self.spec.alpha_threshold else {}

    def _allowed_tags(self) -> set[int] | None:
        if self.config.force is not None:
            return {self.vocab.tag_ids[self.config.force]}
        limit = self.config.max_switches
        if limit is not None and self.switches >= limit and self.language is not None:
            return {self.vocab.tag_ids[self.language]}
        return None


def usage_counters(
    thinking_tokens: int, answer_tokens: int, switches: int, language_tokens: dict[str, int]
) -> dict[str, Any]:
    """A request's counters as ``usage`` reports them (`RequestPolicy.counters`, `PolicyCore.counters`).

    ``thinking_tokens`` are the tokens inside the thinking block, ``answer_tokens`` everything after it
    — its closing ``</think>`` included — so the two add up to the completion (a stop token is in
    neither, as it is not in the completion); ``tag_mix`` is the share of thinking tokens written under
    each language's tag (what the tags say, not what the text is: see ``language_mix`` in serving)."""
    return {
        "thinking_tokens": thinking_tokens,
        "answer_tokens": answer_tokens,
        "switches": switches,
        "language_tokens": dict(language_tokens),
        "tag_mix": shares(language_tokens),
    }


def opens_thinking(token_ids: Sequence[int], vocab: ReasoningVocab) -> bool:
    """Whether a prompt ends inside a thinking block (its last ``<think>`` is after its last ``</think>``)."""
    last_start = last_end = -1
    for index, token in enumerate(token_ids):
        if token == vocab.think_start_id:
            last_start = index
        elif token == vocab.think_end_id:
            last_end = index
    return last_start > last_end


__all__ = ["BANNED", "RequestPolicy", "opens_thinking", "usage_counters"]
