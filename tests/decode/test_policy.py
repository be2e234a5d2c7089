"""Every branch of the policy (the reference) and the transformers processors over the tensor core, on
crafted logits (no model)."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from l2ray.decode.detok import ThinkingSplitter
from l2ray.decode.policy import RequestPolicy, opens_thinking
from l2ray.decode.processors import (
    BudgetForcingLogitsProcessor,
    LanguageTagLogitsProcessor,
    LogitBiasLogitsProcessor,
    PolicyBatch,
    SeededSamplingLogitsProcessor,
)
from l2ray.decode.segment import to_http_bias
from l2ray.decode.slots import Col
from l2ray.decode.spec import PolicyError, PolicySpec, ReasoningVocab
from l2ray.recipe import InterventionConfig

# ids: 0 pad, 1 eos, 2 <think>, 3 </think>, 4 plain, 5 en, 6 zh, 7 fr, 8..11 plain ("Wait" = 9, 10)
VOCAB = ReasoningVocab(tag_ids={"en": 5, "zh": 6, "fr": 7}, think_end_id=3, stop_ids=(1, 0), think_start_id=2)
EN, ZH, FR, END, WAIT = 5, 6, 7, 3, (9, 10)
V = 12


def policy(seed: int = 0, **knobs) -> RequestPolicy:
    return RequestPolicy(InterventionConfig(**knobs), VOCAB, seed=seed, ignore_ids=WAIT)


def logits(top: int, second: int | None = None) -> torch.Tensor:
    """A batch of one row whose argmax is ``top`` (and runner-up ``second``)."""
    row = torch.zeros(1, V)
    row[0, top] = 10.0
    if second is not None:
        row[0, second] = 9.0
    return row


class Driven:
    """One request through the transformers processors, token by token (prompt: ``<think>``)."""

    def __init__(self, seed: int = 0, **knobs) -> None:
        self.batch = PolicyBatch([PolicySpec(InterventionConfig(**knobs), seed, WAIT)], VOCAB)
        self.ids = torch.tensor([[2]])
        self.batch.sync(self.ids)  # the prompt
        self.tags = LanguageTagLogitsProcessor(self.batch)
        self.budget = BudgetForcingLogitsProcessor(self.batch)

    def tag_step(self, scores: torch.Tensor) -> torch.Tensor:
        return self.tags(self.ids, scores)

    def budget_step(self, scores: torch.Tensor) -> int:
        return int(self.budget(self.ids, scores)[0].argmax())

    def emit(self, *tokens: int) -> None:
        self.ids = torch.cat([self.ids, torch.tensor([list(tokens)])], dim=1)
        self.batch.sync(self.ids)

    def state(self, column: Col) -> int:
        return int(self.batch.core.store.table[0, column])


# -- language-tag control -------------------------------------------------------------------------


def test_no_tag_in_top_k_leaves_logits_and_draws_alone():
    driven = Driven(boost=["zh"], top_k=2)
    scores = logits(4, 8)  # tags are far down: not among the top 2
    out = driven.tag_step(scores)
    assert torch.equal(out, scores)
    assert driven.state(Col.DRAWS_SPENT) == 0


def test_tag_in_top_k_boosts_and_suppresses_with_alpha_one():
    out = Driven(boost=["zh"], suppress=["en"], beta=4.0, top_k=2).tag_step(logits(4, EN))
    assert out[0, ZH] == pytest.approx(4.0)
    assert out[0, EN] == pytest.approx(9.0 - 4.0)
    assert out[0, FR] == 0.0 and out[0, 4] == 10.0


def test_alpha_zero_never_biases():
    driven = Driven(boost=["zh"], alpha=0.0, top_k=3)
    scores = logits(4, EN)
    assert torch.equal(driven.tag_step(scores), scores)
    pol = policy(boost=["zh"], alpha=0.0, top_k=3)
    assert pol.tag_bias([EN, 4]) == {} and pol.draws_spent == 1  # a draw is spent whatever alpha is


def test_alpha_is_a_seeded_probability():
    def applied(seed: int) -> list[bool]:
        pol = policy(seed, boost=["zh"], alpha=0.3, top_k=3)
        return [bool(pol.tag_bias([EN, 4])) for _ in range(400)]

    draws = applied(7)
    assert draws == applied(7)  # same seed, same draws
    assert draws != applied(8)
    assert 0.22 < sum(draws) / len(draws) < 0.38


def test_sign_mode_scales_the_bias_by_alpha_at_every_switch_point_without_drawing():
    driven = Driven(boost=["zh"], suppress=["en"], beta=4.0, alpha=0.5, alpha_mode="sign", top_k=2)
    for _ in range(3):
        out = driven.tag_step(logits(4, EN))
        assert out[0, ZH] == pytest.approx(2.0)
        assert out[0, EN] == pytest.approx(9.0 - 2.0)
        driven.emit(4)
    assert driven.state(Col.DRAWS_SPENT) == 0
    scores = logits(4, 8)  # no tag in the top 2: no switch point, no bias
    assert torch.equal(driven.tag_step(scores), scores)


def test_negative_alpha_in_sign_mode_reverses_the_direction():
    driven = Driven(boost=["zh"], suppress=["en"], beta=4.0, alpha=-1.0, alpha_mode="sign", top_k=2)
    out = driven.tag_step(logits(4, EN))
    assert out[0, ZH] == pytest.approx(-4.0)
    assert out[0, EN] == pytest.approx(9.0 + 4.0)


def test_each_tag_rule_biases_only_the_tags_among_the_top_k():
    scores = logits(4, EN)  # en is in the top 2, zh is not
    any_tag = Driven(boost=["zh"], suppress=["en"], beta=4.0, top_k=2).tag_step(scores)
    assert any_tag[0, ZH] == pytest.approx(4.0) and any_tag[0, EN] == pytest.approx(5.0)
    each_tag = Driven(boost=["zh"], suppress=["en"], beta=4.0, top_k=2, top_k_rule="each_tag").tag_step(
        scores
    )
    assert each_tag[0, ZH] == 0.0  # zh was not a candidate here, so it is left alone
    assert each_tag[0, EN] == pytest.approx(5.0)
    driven = Driven(boost=["zh"], alpha=0.3, top_k=2, top_k_rule="each_tag")
    driven.tag_step(scores)
    assert driven.state(Col.DRAWS_SPENT) == 1  # the draw is spent at every switch point under both rules


def test_alpha_outside_zero_one_needs_sign_mode():
    with pytest.raises(ValidationError, match="needs alpha_mode: sign"):
        InterventionConfig(boost=["zh"], alpha=-0.5)
    for bad in ({"alpha": 1.5, "alpha_mode": "sign"}, {"alpha": -1.5, "alpha_mode": "sign"}):
        with pytest.raises(ValidationError):
            InterventionConfig(**bad)
    with pytest.raises(ValidationError):
        InterventionConfig(alpha_mode="direction")


def test_force_opens_with_the_tag_then_bans_other_tags():
    driven = Driven(force="fr")
    first = driven.tag_step(logits(EN))
    assert first[0].argmax() == FR and torch.isinf(first[0, EN])
    driven.emit(FR)
    later = driven.tag_step(logits(ZH, EN))
    assert torch.isinf(later[0, ZH]) and torch.isinf(later[0, EN]) and later[0, FR] == 0.0
    assert later[0].argmax() not in (EN, ZH)


def test_max_switches_bans_other_tags_once_spent():
    pol = policy(max_switches=1)
    for token in (EN, 4, ZH, 4):
        assert pol.tag_bias([token]) == {} or token == 4
        pol.observe(token)
    assert pol.switches == 1 and pol.language == "zh"
    assert pol.tag_bias([EN]) == {EN: -math.inf, FR: -math.inf}


def test_max_switches_zero_keeps_the_first_language():
    pol = policy(max_switches=0)
    assert pol.tag_bias([EN]) == {}  # no language yet: the opening tag is free
    pol.observe(EN)
    assert set(pol.tag_bias([ZH])) == {ZH, FR}
    driven = Driven(max_switches=0)
    driven.emit(EN, 4)
    out = driven.tag_step(logits(ZH, EN))
    assert torch.isinf(out[0, ZH]) and torch.isinf(out[0, FR]) and out[0, EN] == 9.0


def test_no_intervention_after_thinking_ends():
    pol = policy(boost=["zh"], force="zh", top_k=5)
    pol.observe(ZH)
    pol.observe(END)
    assert not pol.thinking
    assert pol.tag_bias([EN, ZH]) == {} and pol.forced_token() is None
    driven = Driven(boost=["zh"], force="zh", top_k=5)
    driven.emit(ZH, END)
    scores = logits(EN)
    assert torch.equal(driven.tag_step(scores), scores)


def test_switch_and_language_counters():
    pol = policy()
    for token in (EN, 4, 4, ZH, 4, EN, END, 4, 4, 1):
        pol.observe(token)
    assert pol.switches == 2
    assert pol.thinking_tokens == 6 and pol.answer_tokens == 3  # the </think> and two answer tokens
    assert pol.tag_mix() == {"en": 0.6667, "zh": 0.3333}
    assert pol.done


# -- budget forcing (s1) --------------------------------------------------------------------------


def test_spent_budget_forces_the_end_of_thinking():
    driven = Driven(max_thinking_tokens=2)
    assert driven.budget_step(logits(4)) == 4
    driven.emit(4, 4)
    assert driven.budget_step(logits(4)) == END


def test_zero_budget_ends_thinking_at_once_and_beats_force():
    pol = policy(max_thinking_tokens=0, force="zh")
    assert pol.forced_token() == END
    driven = Driven(max_thinking_tokens=0, force="zh")
    scores = logits(4)
    assert torch.equal(driven.tag_step(scores), scores)  # the tag processor leaves the position to budget
    assert driven.budget_step(scores) == END


def test_ignore_replaces_the_end_with_wait_then_lets_it_through():
    driven = Driven(num_ignore=1)
    assert driven.budget_step(logits(END)) == WAIT[0]
    driven.emit(WAIT[0])
    assert driven.budget_step(logits(END)) == WAIT[1]  # the rest of ignore_str is forced
    driven.emit(WAIT[1])
    assert driven.state(Col.IGNORES_LEFT) == 0
    assert driven.budget_step(logits(END)) == END
    pol = policy(num_ignore=1)
    assert pol.replace(END) == WAIT[0]
    pol.observe(WAIT[0])
    assert pol.forced_token() == WAIT[1]


def test_ignore_never_overdraws_the_budget():
    pol = policy(num_ignore=3, max_thinking_tokens=4)
    pol.observe(4)
    pol.observe(4)  # 2 spent; "Wait" (2 tokens) would leave no room: end instead
    assert pol.replace(END) == END
    assert pol.ignores_left == 3


def test_budget_and_ignore_validation():
    for bad in (
        {"max_thinking_tokens": -1},
        {"max_thinking_tokens": 10**9},
        {"num_ignore": -2},
        {"ignore_str": ""},
    ):
        with pytest.raises(ValidationError):
            InterventionConfig(**bad)


# -- configuration and vocabulary errors ----------------------------------------------------------


@pytest.mark.parametrize(
    "knobs, needle",
    [
        ({"boost": ["xx"]}, "unknown language code 'xx'"),
        ({"force": "klingon"}, "unknown language code"),
        ({"boost": ["zh"], "suppress": ["zh"]}, "both boost and suppress"),
        ({"force": "zh", "suppress": ["zh"]}, "also suppressed"),
        ({"beta": 500}, "less than or equal to 100"),
    ],
)
def test_config_rejects(knobs, needle):
    with pytest.raises(ValidationError, match=needle):
        InterventionConfig(**knobs)


def test_policy_rejects_languages_without_tags_and_budget_without_think_end():
    with pytest.raises(PolicyError, match="lacks"):
        RequestPolicy(InterventionConfig(boost=["ja"]), VOCAB)
    no_end = ReasoningVocab(tag_ids={}, think_end_id=None, stop_ids=(1,))
    with pytest.raises(PolicyError, match="</think>"):
        RequestPolicy(InterventionConfig(max_thinking_tokens=5), no_end)
    assert not InterventionConfig().active and InterventionConfig(max_switches=0).active


# -- the other processors and helpers -------------------------------------------------------------


def test_logit_bias_and_seeded_sampling_are_per_row():
    scores = torch.zeros(2, V)
    biased = LogitBiasLogitsProcessor([{4: 5.0}, {}])(torch.zeros(2, 1, dtype=torch.long), scores.clone())
    assert biased[0, 4] == 5.0 and biased[1, 4] == 0.0

    def sample(seeds, temperatures=(1.0, 1.0)):
        sampler = SeededSamplingLogitsProcessor(list(temperatures), [1.0, 0.5], seeds)
        return [
            sampler(torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, V)).argmax(-1).tolist()
            for _ in range(20)
        ]

    assert sample([1, 2]) == sample([1, 2])
    # row 0 does not depend on what row 1 is seeded with: batching cannot change a request
    assert [s[0] for s in sample([1, 2])] == [s[0] for s in sample([1, 99])]
    greedy = SeededSamplingLogitsProcessor([0.0], [1.0], [0])(torch.zeros(1, 1, dtype=torch.long), logits(8))
    assert torch.equal(greedy, logits(8))


def test_policy_batch_feeds_each_token_once():
    driven = Driven()
    driven.emit(EN, 4)
    driven.batch.sync(driven.ids)
    assert driven.state(Col.THINKING_TOKENS) == 2
    assert driven.batch.counters([0]) == [
        {
            "thinking_tokens": 2,
            "answer_tokens": 0,
            "switches": 0,
            "language_tokens": {"en": 2},
            "tag_mix": {"en": 1.0},
        }
    ]


def test_prompt_opens_thinking_and_http_bias():
    assert (
        opens_thinking([4, 2], VOCAB)
        and not opens_thinking([2, 4, 3], VOCAB)
        and not opens_thinking([4], VOCAB)
    )
    assert to_http_bias({5: -math.inf, 6: 300.0, 7: 2.5}) == {5: -100.0, 6: 100.0, 7: 2.5}


def test_thinking_splitter_holds_a_partial_marker():
    splitter = ThinkingSplitter(thinking=True)
    assert splitter.feed("abc</thi") == ("abc", "")
    assert splitter.feed("nk>\n\nAns") == ("", "Ans")
    assert splitter.feed("wer") == ("", "wer")
    open_ended = ThinkingSplitter(thinking=True)
    assert open_ended.feed("x </") == ("x ", "")
    assert open_ended.finish() == ("</", "")


@pytest.mark.parametrize(
    "make",
    [
        lambda pol: LanguageTagLogitsProcessor(PolicyBatch([pol.spec], VOCAB)),
        lambda pol: BudgetForcingLogitsProcessor(PolicyBatch([pol.spec], VOCAB)),
        lambda pol: LogitBiasLogitsProcessor([{4: 2.0, 6: -math.inf}]),
        lambda pol: SeededSamplingLogitsProcessor([1.0], [0.9], [3]),
    ],
)
def test_processors_return_new_logits_and_leave_theirs_alone(make):
    """As transformers' own: the scores passed in are never edited (the engine no longer clones them)."""
    pol = policy(force="zh", max_thinking_tokens=5, num_ignore=1)
    scores = logits(END, ZH)
    before = scores.clone()
    out = make(pol)(torch.tensor([[2]]), scores)
    assert torch.equal(scores, before)
    assert not torch.equal(out, before)  # each case changes something, so the check means something
