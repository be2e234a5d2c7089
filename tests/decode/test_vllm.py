"""The policy behind vLLM: the V1 logits-processor adapter against the transformers one, on crafted
logits (every batch change vLLM makes: add, remove, swap) and on a real engine (greedy parity)."""

from __future__ import annotations

import pytest
import torch

from l2ray.decode.config import InterventionConfig
from l2ray.decode.policy import PolicyError, ReasoningVocab, RequestPolicy, encode_policy
from l2ray.decode.processors import BudgetForcingLogitsProcessor, LanguageTagLogitsProcessor, PolicyBatch
from l2ray.decode.types import DecodeRequest

vllm = pytest.importorskip("vllm")
from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality  # noqa: E402

from l2ray.decode.vllm_processor import SPEC_KEY, L2rayLogitsProcessor  # noqa: E402

# ids: 0 pad, 1 eos, 2 <think>, 3 </think>, 4 plain, 5 en, 6 zh, 7 fr, 8..11 plain ("Wait" = 9, 10)
VOCAB = ReasoningVocab(tag_ids={"en": 5, "zh": 6, "fr": 7}, think_end_id=3, stop_ids=(1, 0), think_start_id=2)
V = 12
CONFIGS = [
    InterventionConfig(),
    InterventionConfig(boost=["zh"], suppress=["en"], beta=3.0, top_k=4, alpha=0.5),
    InterventionConfig(boost=["fr"], beta=2.0, top_k=3, alpha=-0.7, alpha_mode="sign"),
    InterventionConfig(force="fr"),
    InterventionConfig(max_switches=1, top_k=5),
    InterventionConfig(num_ignore=2, max_thinking_tokens=30),
    InterventionConfig(max_thinking_tokens=6, boost=["en"], top_k=6),
]


def fresh_policies() -> list[RequestPolicy]:
    return [RequestPolicy(c, VOCAB, seed=row, ignore_ids=(9, 10)) for row, c in enumerate(CONFIGS)]


def crafted_logits(steps: int) -> list[torch.Tensor]:
    """Random logits where tags and ``</think>`` are often near the top (never pad or EOS)."""
    noise = torch.Generator().manual_seed(0)
    steps_ = [torch.randn(len(CONFIGS), V, generator=noise) * 3 for _ in range(steps)]
    for scores in steps_:
        scores[:, :2] = -20.0
    return steps_


def transformers_tokens(steps: list[torch.Tensor]) -> list[list[int]]:
    batch = PolicyBatch(fresh_policies())
    tags, budget = LanguageTagLogitsProcessor(batch), BudgetForcingLogitsProcessor(batch)
    ids = torch.full((len(CONFIGS), 1), 2)
    for scores in steps:
        chosen = budget(ids, tags(ids, scores.clone())).argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, chosen], dim=1)
    return ids[:, 1:].tolist()


def vllm_tokens(
    steps: list[torch.Tensor], swap_at: int, pause: tuple[int, int] | None = None
) -> list[list[int]]:
    """The same decode through the vLLM adapter; at ``swap_at`` vLLM swaps rows 0 and 1 and moves row
    2 to a free slot, as its persistent batch does when it condenses. ``pause = (at, until)``: vLLM
    preempts requests 1 (alpha draws) and 5 (ignores) at step ``at`` — removes them from the batch —
    and adds them back, at other rows, at step ``until``; meanwhile they generate nothing."""
    processor = L2rayLogitsProcessor(None, torch.device("cpu"), False)
    outputs: list[list[int]] = [[] for _ in CONFIGS]
    params = [SamplingParams(extra_args={SPEC_KEY: encode_policy(p)}) for p in fresh_policies()]
    added = [(row, params[row], [2], outputs[row]) for row in range(len(CONFIGS))]
    processor.update_state(BatchUpdate(len(CONFIGS), removed=[], added=added, moved=[]))
    slot_of: dict[int, int] = dict(enumerate(range(len(CONFIGS))))  # running request -> batch row
    spare, paused, step = len(CONFIGS), [1, 5], 0
    while any(len(out) < len(steps) for out in outputs):
        if step == swap_at:
            moved = [(0, 1, MoveDirectionality.SWAP), (2, spare, MoveDirectionality.UNIDIRECTIONAL)]
            processor.update_state(BatchUpdate(len(CONFIGS), removed=[], added=[], moved=moved))
            slot_of[0], slot_of[1], slot_of[2] = 1, 0, spare
        if pause and step == pause[0]:
            removed = [slot_of.pop(request) for request in paused]
            processor.update_state(BatchUpdate(len(CONFIGS), removed=removed, added=[], moved=[]))
        if pause and step == pause[1]:
            back = [(spare + 1 + i, params[r], [2], outputs[r]) for i, r in enumerate(paused)]
            processor.update_state(BatchUpdate(len(CONFIGS), removed=[], added=back, moved=[]))
            slot_of.update({request: entry[0] for request, entry in zip(paused, back, strict=True)})
        running = {r: row for r, row in slot_of.items() if len(outputs[r]) < len(steps)}
        logits = torch.full((spare + 1 + len(paused), V), -5.0)
        for request, row in running.items():
            logits[row] = steps[len(outputs[request])][request]  # each request at its own position
        chosen = processor.apply(logits).argmax(dim=-1).tolist()
        for request, row in running.items():
            outputs[request].append(chosen[row])  # vLLM appends to the live list after sampling
        step += 1
    return outputs


def test_both_adapters_choose_the_same_tokens_on_crafted_logits():
    steps = crafted_logits(40)
    reference = transformers_tokens(steps)
    assert vllm_tokens(steps, swap_at=17) == reference
    assert reference[3][0] == 7  # force opens with its tag
    assert reference[6][6] == 3  # the 6-token budget ends the thinking
    assert reference[0] != reference[1]  # the intervention did change something


def test_a_preempted_request_resumes_with_its_policy_not_a_fresh_one():
    steps = crafted_logits(40)
    reference = transformers_tokens(steps)
    # where request 5 wanted to end its thinking and got "Wait" (9, 10) instead
    ignores = [i for i, token in enumerate(reference[5]) if token == 9 and steps[i][5].argmax() == 3]
    assert ignores, reference[5]
    at = ignores[0] + 1  # preempted between the ignore's two tokens: one ignore spent, 10 still due
    assert vllm_tokens(steps, swap_at=17, pause=(at, at + 3)) == reference


def test_a_request_whose_slot_is_refilled_in_the_same_step_keeps_its_policy_when_it_returns():
    processor = L2rayLogitsProcessor(None, torch.device("cpu"), False)
    first, second = (SamplingParams(extra_args={SPEC_KEY: encode_policy(p)}) for p in fresh_policies()[4:6])
    processor.update_state(BatchUpdate(1, removed=[], added=[(0, first, [2], [5, 6])], moved=[]))
    row = processor.rows[0]
    # first is preempted and second takes its slot in one step: vLLM then reports no removal
    processor.update_state(BatchUpdate(1, removed=[], added=[(0, second, [2], [])], moved=[]))
    assert processor.rows[0].params is second
    processor.update_state(BatchUpdate(2, removed=[], added=[(1, first, [2], [5, 6])], moved=[]))
    assert processor.rows[1] is row


def test_removed_rows_and_rows_without_a_policy_are_left_alone():
    processor = L2rayLogitsProcessor(None, torch.device("cpu"), False)
    forced = SamplingParams(extra_args={SPEC_KEY: encode_policy(fresh_policies()[3])})
    added = [(0, forced, [2], []), (1, SamplingParams(), [2], [])]
    processor.update_state(BatchUpdate(2, removed=[], added=added, moved=[]))
    logits = torch.zeros(2, V)
    out = processor.apply(logits.clone())
    assert out[0].argmax() == 7 and torch.equal(out[1], logits[1])
    processor.update_state(BatchUpdate(1, removed=[0], added=[], moved=[]))
    assert torch.equal(processor.apply(logits.clone()), logits)


def test_a_malformed_spec_is_refused_when_the_request_arrives():
    with pytest.raises(PolicyError, match="malformed l2ray policy spec"):
        L2rayLogitsProcessor.validate_params(SamplingParams(extra_args={SPEC_KEY: '{"config": {}}'}))
    L2rayLogitsProcessor.validate_params(
        SamplingParams(extra_args={SPEC_KEY: encode_policy(fresh_policies()[1])})
    )


def test_a_model_whose_head_size_the_cpu_backend_lacks_is_refused_before_an_engine_starts(student_path):
    from vllm.platforms import current_platform

    from l2ray.decode.config import VllmEngineConfig
    from l2ray.decode.vllm_engine import EngineModelError, engine_kwargs
    from l2ray.student.resolve import resolve_student

    if not current_platform.is_cpu():
        pytest.skip("the check is for vLLM's CPU build")
    lab = resolve_student("builtin:lab")  # 8 heads of 16
    with pytest.raises(EngineModelError, match=r"head size 16 .* engine: transformers"):
        engine_kwargs(lab, VllmEngineConfig())
    assert engine_kwargs(str(student_path), VllmEngineConfig())["model"] == str(student_path)  # 4 of 32


ENGINE_CONFIGS = [
    InterventionConfig(),
    InterventionConfig(force="zh"),
    InterventionConfig(boost=["zh"], beta=2.0, alpha=0.5),
    InterventionConfig(suppress=["ru", "ja"], beta=3.0),
    InterventionConfig(boost=["en"], alpha=0.6, alpha_mode="sign"),
    InterventionConfig(max_switches=1),
    InterventionConfig(max_thinking_tokens=7),
    InterventionConfig(num_ignore=2, max_thinking_tokens=40),
]


@pytest.mark.slow
def test_vllm_and_transformers_make_the_same_tag_choices_and_budget_cuts(vllm_engine, switching_student_path):
    from l2ray.decode.engine import DecodeEngine

    hf = DecodeEngine.load(str(switching_student_path), device="cpu")
    prompt = hf.codec.chat_prompt([{"role": "user", "content": "What is 12+7?"}])
    requests = [DecodeRequest(prompt, 40, config, seed=row) for row, config in enumerate(ENGINE_CONFIGS)]
    expected = hf.complete(requests)
    got = vllm_engine.complete(requests)
    for config, want, have in zip(ENGINE_CONFIGS, expected, got, strict=True):
        assert (have.text, have.finish_reason, have.usage) == (want.text, want.finish_reason, want.usage), (
            config
        )
    assert expected[1].text.startswith("<|lang:zh|>")
    assert expected[0].switches > 0 and expected[5].switches == 1
    assert expected[6].thinking_tokens == 7
    assert "ru" in expected[0].language_mix and "ru" not in expected[3].language_mix
    assert expected[2].text != expected[0].text
    # Through vLLM the intervention shifts the language mix of the thinking the way it says.
    share = [done.language_mix for done in got]
    assert share[2].get("zh", 0.0) > share[0].get("zh", 0.0)  # boost zh
    assert share[4].get("en", 0.0) > share[0].get("en", 0.0)  # boost en
    assert share[0].get("ru", 0.0) + share[0].get("ja", 0.0) > 0.0
    assert share[3].get("ru", 0.0) + share[3].get("ja", 0.0) == 0.0  # suppress ru, ja
