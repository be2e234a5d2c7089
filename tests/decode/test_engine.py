"""The decode engine on the offline student: the LocalGenerator contract, policies end to end,
reproducibility under batching, and the segment loop's parity with the processors."""

from __future__ import annotations

import asyncio

import pytest

from l2ray.decode.config import InterventionConfig
from l2ray.decode.engine import Completion, DecodeRequest, LocalGenerator
from l2ray.decode.processors import BudgetForcingLogitsProcessor, LanguageTagLogitsProcessor, PolicyBatch
from l2ray.decode.segment import EngineBackend, run_segment_loop
from l2ray.languages import tag_token
from l2ray.text import tag_languages

CHATS = [
    [{"role": "user", "content": "What is $2+3$?"}],
    [{"role": "user", "content": "Combien font 7 fois 6 ?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "x^2 = 9, x > 0. x?"}],
]


@pytest.fixture(scope="module")
def generator(student_path) -> LocalGenerator:
    return LocalGenerator(str(student_path), device="cpu")


def test_contract_and_counters(generator):
    completions = generator.generate(CHATS, InterventionConfig(max_thinking_tokens=6), max_tokens=20)
    assert len(completions) == len(CHATS)
    for c in completions:
        assert isinstance(c, Completion)
        assert c.prompt_tokens > 0 and c.completion_tokens <= 20
        assert c.thinking_tokens <= 6
        closed = "</think>" in c.text
        assert c.completion_tokens == c.thinking_tokens + c.answer_tokens + int(closed)
        assert c.finish_reason in {"stop", "length"}
        assert not c.text.startswith("<think>")  # the template opened it; it is not repeated


def test_force_yields_only_the_forced_tag(generator):
    for c in generator.generate(
        CHATS, InterventionConfig(force="ja"), max_tokens=24, temperature=1.0, seed=3
    ):
        assert c.text.startswith(tag_token("ja"))
        thinking = c.text.split("</think>")[0]
        assert set(tag_languages(thinking)) == {"ja"}
        assert c.switches == 0 and c.language_mix == {"ja": 1.0}


def test_budget_with_ignore_appends_wait(generator):
    tokenizer = generator.engine.tokenizer
    ignore = InterventionConfig(max_thinking_tokens=4, num_ignore=2, ignore_str="Wait")
    [c] = generator.generate(CHATS[:1], ignore, max_tokens=12)
    assert c.thinking_tokens == 4 and "</think>" in c.text
    # with a budget too small for "Wait" the end of thinking simply passes
    assert len(tokenizer("Wait", add_special_tokens=False)["input_ids"]) >= 1


def test_a_request_is_reproducible_whatever_it_is_batched_with(generator):
    knobs = InterventionConfig(boost=["zh"], alpha=0.5, beta=3.0)
    [alone] = generator.generate(CHATS[2:], knobs, max_tokens=16, temperature=1.0, seed=11)
    batched = generator.generate(
        CHATS, knobs, max_tokens=16, temperature=1.0, seed=9
    )  # CHATS[2] gets seed 11
    assert batched[2].text == alone.text
    [other] = generator.generate(CHATS[2:], knobs, max_tokens=16, temperature=1.0, seed=12)
    assert other.text != alone.text


def test_processors_work_inside_transformers_generate(generator):
    engine = generator.engine
    request = DecodeRequest(
        engine.codec.chat_prompt(CHATS[0]), 10, InterventionConfig(force="de", max_thinking_tokens=5)
    )
    expected = [e.token for e in engine.run([request])[0] if not e.is_stop]
    batch = PolicyBatch([engine.codec.policy(request)])
    import torch

    prompt = torch.tensor([request.prompt_ids])
    out = engine.model.generate(
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=10,
        do_sample=False,
        logits_processor=[LanguageTagLogitsProcessor(batch), BudgetForcingLogitsProcessor(batch)],
    )
    assert out[0, prompt.shape[1] :].tolist()[: len(expected)] == expected


@pytest.mark.parametrize(
    "knobs",
    [
        {"force": "ko", "max_thinking_tokens": 12, "num_ignore": 1},
        {"force": "fr", "boost": ["fr"], "max_thinking_tokens": 3},
    ],
)
def test_segment_loop_makes_the_same_choices_as_the_processors(generator, knobs):
    """Forced tags and budgets here; boosted switch points need a student that emits tags, so that
    parity is checked on the trained student in tests/serve."""
    engine = generator.engine
    config = InterventionConfig(**knobs)
    request = DecodeRequest(engine.codec.chat_prompt(CHATS[1]), 40, config, seed=5)
    fast_policy = engine.codec.policy(request)
    fast = [e.token for e in engine.run([request], [fast_policy])[0] if not e.is_stop]
    loop_policy = engine.codec.policy(request)
    result = asyncio.run(
        run_segment_loop(EngineBackend(engine), request.prompt_ids, loop_policy, 40, chunk=8)
    )
    assert result.tokens == fast
    assert loop_policy.language_tokens == fast_policy.language_tokens
    assert loop_policy.switches == fast_policy.switches
    assert fast_policy.language_tokens, "the case must exercise tags"
