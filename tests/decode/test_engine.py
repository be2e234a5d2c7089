"""The decode engine on the offline student: the chat-generation contract, policies end to end,
reproducibility under batching, and the segment loop's parity with the processors."""

from __future__ import annotations

import asyncio

import pytest
from engine_support import EngineBackend, LocalGenerator, LoopResult, run_segment_loop

from l2ray.decode.processors import BudgetForcingLogitsProcessor, LanguageTagLogitsProcessor, PolicyBatch
from l2ray.decode.segment import Sampling, SegmentLoop
from l2ray.decode.types import Completion, DecodeRequest, TokenStep
from l2ray.languages import tag_token
from l2ray.recipe import InterventionConfig
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
        assert c.completion_tokens == c.thinking_tokens + c.answer_tokens  # </think> is the answer's first
        assert c.answer_tokens >= int(closed)
        assert c.finish_reason in {"stop", "length"}
        assert not c.text.startswith("<think>")  # the template opened it; it is not repeated


def test_force_yields_only_the_forced_tag(generator):
    for c in generator.generate(
        CHATS, InterventionConfig(force="ja"), max_tokens=24, temperature=1.0, seed=3
    ):
        assert c.text.startswith(tag_token("ja"))
        thinking = c.text.split("</think>")[0]
        assert set(tag_languages(thinking)) == {"ja"}
        assert c.switches == 0 and c.tag_mix == {"ja": 1.0}


def test_budget_with_ignore_turns_early_ends_of_thinking_into_wait(generator):
    """s1's ignore: while ignores and budget remain, a chosen ``</think>`` becomes ``ignore_str``."""
    engine = generator.engine
    wait = engine.codec.encode("Wait")
    prompt = engine.codec.chat_prompt(CHATS[0])

    def eager_to_stop_thinking(budget: int) -> Completion:
        # +100 on </think>: the model tries to close its thinking at every position.
        knobs = InterventionConfig(max_thinking_tokens=budget, num_ignore=2, ignore_str="Wait")
        request = DecodeRequest(prompt, 12, knobs, logit_bias={engine.vocab.think_end_id: 100.0})
        [completion] = engine.complete([request])
        return completion

    roomy = eager_to_stop_thinking(budget=10)
    thinking, closed, _ = roomy.text.partition("</think>")
    assert closed and thinking == "WaitWait"  # two ignores, then the third attempt passes
    assert roomy.thinking_tokens == 2 * len(wait)

    # a budget with no room for another "Wait" lets the end of thinking through at once
    tight = eager_to_stop_thinking(budget=len(wait))
    assert tight.text.startswith("</think>") and tight.thinking_tokens == 0


def test_a_cancelled_row_ends_at_the_next_step_and_the_others_go_on(generator):
    engine = generator.engine
    prompt = engine.codec.encode("What is")
    keep, drop = DecodeRequest(prompt, 8), DecodeRequest(prompt, 8)
    kept, dropped = [], []
    for step, (first, second) in enumerate(engine.stream([keep, drop])):
        kept.append(first)
        dropped.append(second)
        if step == 1:
            drop.cancelled = True  # what the serve Generator does when its caller goes away
    assert [e is not None for e in dropped] == [True, True] + [False] * (len(dropped) - 2)
    [alone] = engine.run([DecodeRequest(prompt, 8)])
    assert [e.token for e in kept if e] == [e.token for e in alone]
    assert kept[-1].finish_reason in {"stop", "length"}


def test_a_request_is_reproducible_whatever_it_is_batched_with(generator):
    knobs = InterventionConfig(boost=["zh"], alpha=0.5, beta=3.0)
    [alone] = generator.generate(CHATS[2:], knobs, max_tokens=16, temperature=1.0, seed=11)
    batched = generator.generate(
        CHATS, knobs, max_tokens=16, temperature=1.0, seed=9
    )  # CHATS[2] gets seed 11
    assert batched[2].text == alone.text
    [other] = generator.generate(CHATS[2:], knobs, max_tokens=16, temperature=1.0, seed=12)
    assert other.text != alone.text


def test_each_row_keeps_its_own_thinking_budget_in_a_mixed_batch(generator):
    """What Serve's dynamic batches do: rows with different budgets decode together, and each row's
    tokens are those it gets alone."""
    engine = generator.engine
    budgets = [2, 5, 9]
    requests = [
        DecodeRequest(engine.codec.chat_prompt(CHATS[0]), 24, InterventionConfig(max_thinking_tokens=b))
        for b in budgets
    ]
    together = engine.complete(requests)
    alone = [engine.complete([r])[0] for r in requests]
    assert [c.text for c in together] == [c.text for c in alone]
    assert all(c.thinking_tokens <= b for c, b in zip(together, budgets, strict=True))
    assert len({c.thinking_tokens for c in together}) > 1  # the budgets differ, and they bind


def test_processors_work_inside_transformers_generate(generator):
    engine = generator.engine
    request = DecodeRequest(
        engine.codec.chat_prompt(CHATS[0]), 10, InterventionConfig(force="de", max_thinking_tokens=5)
    )
    expected = [e.token for e in engine.run([request])[0] if not e.is_stop]
    batch = PolicyBatch([engine.codec.spec(request)], engine.vocab)
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
    [steps] = engine.run([request])
    fast, counters = [e.token for e in steps if not e.is_stop], steps[-1].usage
    loop_policy = engine.codec.policy(request)
    result = asyncio.run(
        run_segment_loop(EngineBackend(engine), request.prompt_ids, loop_policy, 40, chunk=8)
    )
    assert result.tokens == fast
    assert loop_policy.language_tokens == counters["language_tokens"]
    assert loop_policy.switches == counters["switches"]
    assert counters["language_tokens"], "the case must exercise tags"


def test_segment_loop_passes_sampling_and_logit_bias_to_the_generator(generator):
    """Seeded sampling is reproducible and follows the seed; the request's logit_bias reaches every call."""
    engine = generator.engine
    prompt = engine.codec.chat_prompt(CHATS[0])
    request = DecodeRequest(prompt, 24, InterventionConfig(max_thinking_tokens=10))

    def sample(seed: int, **kwargs) -> LoopResult:
        policy = engine.codec.policy(request)
        loop = run_segment_loop(EngineBackend(engine), prompt, policy, 24, chunk=8, **kwargs)
        return asyncio.run(loop)

    first, again = sample(3, sampling=Sampling(1.0, 1.0, 3)), sample(3, sampling=Sampling(1.0, 1.0, 3))
    other = sample(4, sampling=Sampling(1.0, 1.0, 4))
    greedy = sample(3)
    assert first.tokens == again.tokens
    assert other.tokens != first.tokens and greedy.tokens != first.tokens

    favourite = engine.codec.encode(" seven")[0]
    biased = sample(3, logit_bias={favourite: 100.0})
    answer = biased.tokens[biased.tokens.index(engine.vocab.think_end_id) + 1 :]
    assert answer and set(answer) == {favourite}


def test_segment_loop_streams_a_delta_per_generator_call(generator):
    engine = generator.engine
    prompt = engine.codec.chat_prompt(CHATS[1])
    request = DecodeRequest(prompt, 30, InterventionConfig(force="ko", max_thinking_tokens=12))

    async def groups() -> list[tuple[list[TokenStep], int]]:
        loop = SegmentLoop(EngineBackend(engine), prompt, engine.codec.policy(request), 30, chunk=4)
        return [(group, loop.calls) async for group in loop.stream()]

    streamed = asyncio.run(groups())
    whole = asyncio.run(
        run_segment_loop(EngineBackend(engine), prompt, engine.codec.policy(request), 30, chunk=4)
    )
    tokens = [[s.token for s in group if not s.is_stop] for group, _ in streamed]
    assert len(streamed) > 2 and all(s.finish_reason is None for g, _ in streamed[:-1] for s in g)
    assert [t for group in tokens for t in group] == whole.tokens
    assert streamed[-1][0][-1].finish_reason == whole.finish_reason
    calls = [c for _, c in streamed]
    assert calls == sorted(calls)  # tokens as calls return
    # The answer streams too: after the group that closes the thinking, it arrives chunk by chunk.
    think_end = engine.codec.vocab.think_end_id
    closing = next(i for i, group in enumerate(tokens) if think_end in group)
    answer = [group for group in tokens[closing + 1 :] if group]
    assert len(answer) >= 2 and all(len(group) <= 4 for group in answer)
