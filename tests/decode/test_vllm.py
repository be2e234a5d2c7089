"""The intervention behind vLLM: both model runners' adapters against the transformers one on crafted
logits (every batch change each runner makes: add, remove, swap, preempt, refill, reorder), the class
vLLM loads becoming the right adapter, and a real engine (greedy parity)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from l2ray.decode.processors import BudgetForcingLogitsProcessor, LanguageTagLogitsProcessor, PolicyBatch
from l2ray.decode.slots import Col
from l2ray.decode.spec import PolicyError, PolicySpec, ReasoningVocab
from l2ray.decode.types import DecodeRequest
from l2ray.recipe import InterventionConfig

vllm = pytest.importorskip("vllm")
from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality  # noqa: E402
from vllm.v1.worker.gpu.sample.logits_processor.interface import (  # noqa: E402
    LogitsContext,
    LogitsProcRequestState,
)

from l2ray.decode.vllm_processor import L2rayLogitsProcessor  # noqa: E402
from l2ray.decode.vllm_requests import SPEC_KEY, request_args  # noqa: E402
from l2ray.decode.vllm_v1 import V1Processor  # noqa: E402
from l2ray.decode.vllm_v2 import ModelRunnerV2Processor  # noqa: E402

# ids: 0 pad, 1 eos, 2 <think>, 3 </think>, 4 plain, 5 en, 6 zh, 7 fr, 8..11 plain ("Wait" = 9, 10)
VOCAB = ReasoningVocab(tag_ids={"en": 5, "zh": 6, "fr": 7}, think_end_id=3, stop_ids=(1, 0), think_start_id=2)
V = 12
CONFIGS = [
    InterventionConfig(max_thinking_tokens=1000),
    InterventionConfig(boost=["zh"], suppress=["en"], beta=3.0, top_k=4, alpha=0.5),
    InterventionConfig(boost=["fr"], beta=2.0, top_k=3, alpha=-0.7, alpha_mode="sign"),
    InterventionConfig(force="fr"),
    InterventionConfig(max_switches=1, top_k=5),
    InterventionConfig(num_ignore=2, max_thinking_tokens=30),
    InterventionConfig(max_thinking_tokens=6, boost=["en"], top_k=6),
]
PROMPT = [4, 2]


def specs() -> list[PolicySpec]:
    return [PolicySpec(c, seed=row, ignore_ids=(9, 10)) for row, c in enumerate(CONFIGS)]


def crafted_logits(steps: int) -> list[torch.Tensor]:
    """Random logits where tags and ``</think>`` are often near the top (never pad or EOS)."""
    noise = torch.Generator().manual_seed(0)
    steps_ = [torch.randn(len(CONFIGS), V, generator=noise) * 3 for _ in range(steps)]
    for scores in steps_:
        scores[:, :2] = -20.0
    return steps_


def transformers_tokens(steps: list[torch.Tensor]) -> list[list[int]]:
    batch = PolicyBatch(specs(), VOCAB)
    tags, budget = LanguageTagLogitsProcessor(batch), BudgetForcingLogitsProcessor(batch)
    ids = torch.full((len(CONFIGS), 1), 2)
    for scores in steps:
        chosen = budget(ids, tags(ids, scores.clone())).argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, chosen], dim=1)
    return ids[:, 1:].tolist()


def v1_tokens(
    steps: list[torch.Tensor], swap_at: int, pause: tuple[int, int] | None = None
) -> list[list[int]]:
    """The same decode through the V1 adapter; at ``swap_at`` vLLM swaps rows 0 and 1 and moves row
    2 to a free slot, as its persistent batch does when it condenses. ``pause = (at, until)``: vLLM
    preempts requests 1 (alpha draws) and 5 (ignores) at step ``at`` — removes them from the batch —
    and adds them back, at other rows, at step ``until``; meanwhile they generate nothing."""
    processor = V1Processor(VOCAB, "cpu", slots=4)
    outputs: list[list[int]] = [[] for _ in CONFIGS]
    params = [SamplingParams(extra_args=request_args(spec)) for spec in specs()]
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


class V2Runner:
    """Model Runner V2's side of the interface on CPU: slots from a free list, committed tokens in
    ``all_token_ids``, rows reordered every step, preemption as removal + re-admission elsewhere."""

    def __init__(self, slots: int, seed: int = 0) -> None:
        buffer = lambda *shape: SimpleNamespace(gpu=torch.zeros(shape, dtype=torch.int32))  # noqa: E731
        self.states = LogitsProcRequestState(
            device=torch.device("cpu"),
            max_num_reqs=slots,
            vocab_size=V,
            all_token_ids=buffer(slots, 256),
            prompt_len=SimpleNamespace(np=np.zeros(slots, dtype=np.int32)),
            prefill_len=SimpleNamespace(
                np=np.zeros(slots, dtype=np.int32), gpu=torch.zeros(slots, dtype=torch.int32)
            ),
            total_len=buffer(slots),
        )
        self.processor = ModelRunnerV2Processor(VOCAB, self.states)
        self.free = list(range(slots))
        self.slot_of: dict[int, int] = {}
        self.order = torch.Generator().manual_seed(seed)

    def admit(self, request: int, params: SamplingParams, tokens: list[int], prompt: int) -> None:
        slot = self.free.pop()
        self.slot_of[request] = slot
        self.states.all_token_ids.gpu[slot, : len(tokens)] = torch.tensor(tokens)
        self.states.prompt_len.np[slot] = prompt
        self.states.prefill_len.np[slot] = len(tokens)
        self.states.prefill_len.gpu[slot] = len(tokens)
        self.states.total_len.gpu[slot] = len(tokens)
        self.processor.add_request(slot, copy.deepcopy(params))  # V2 gets a fresh copy each time

    def remove(self, request: int) -> None:
        self.free.append(self.slot_of.pop(request))

    def step(self, logits_of: dict[int, torch.Tensor]) -> dict[int, int]:
        """One step for the requests in ``logits_of`` (in a random row order): their sampled tokens."""
        self.processor.apply_staged_writes()
        requests = [list(logits_of)[i] for i in torch.randperm(len(logits_of), generator=self.order)]
        slots = torch.tensor([self.slot_of[r] for r in requests])
        ctx = LogitsContext(
            expanded_idx_mapping=slots,
            idx_mapping=slots,
            idx_mapping_np=slots.numpy(),
            expanded_local_pos=torch.zeros_like(slots),
            input_ids=torch.zeros_like(slots),
            pos=self.states.total_len.gpu[slots].long() - 1,
            seq_lens_upper_bound_np=np.zeros(len(slots), dtype=np.int32),
        )
        chosen = self.processor.apply(torch.stack([logits_of[r] for r in requests]), ctx).argmax(-1)
        for slot, token in zip(slots.tolist(), chosen.tolist(), strict=True):  # commit, as post_update does
            self.states.all_token_ids.gpu[slot, self.states.total_len.gpu[slot]] = token
            self.states.total_len.gpu[slot] += 1
        return dict(zip(requests, chosen.tolist(), strict=True))


def v2_tokens(
    steps: list[torch.Tensor], pause: tuple[int, int] | None = None, slots: int = 16
) -> list[list[int]]:
    """The same decode through the Model Runner V2 adapter; ``pause = (at, until)`` preempts requests 1
    and 5 at step ``at`` and re-admits them at ``until`` in other slots, their output in the prefill."""
    runner = V2Runner(slots)
    params = [SamplingParams(extra_args=request_args(spec)) for spec in specs()]
    outputs: list[list[int]] = [[] for _ in CONFIGS]
    for request, param in enumerate(params):
        runner.admit(request, param, PROMPT, len(PROMPT))
    for step in range(len(steps) + (pause[1] - pause[0] if pause else 0)):
        if pause and step == pause[0]:
            for request in (1, 5):
                runner.remove(request)
                runner.admit(99 + request, SamplingParams(), [4, 4], 2)  # a stranger takes the slot
        if pause and step == pause[1]:
            for request in (1, 5):
                runner.remove(99 + request)
                runner.admit(request, params[request], PROMPT + outputs[request], len(PROMPT))
        waiting = {1, 5} if pause and pause[0] <= step < pause[1] else set()
        running = [r for r in runner.slot_of if r < 99 and r not in waiting and len(outputs[r]) < len(steps)]
        live = {r: steps[len(outputs[r])][r] for r in running}
        for request, token in runner.step(live).items():
            outputs[request].append(token)
    return outputs


def test_every_adapter_chooses_the_same_tokens_on_crafted_logits():
    steps = crafted_logits(40)
    reference = transformers_tokens(steps)
    assert v1_tokens(steps, swap_at=17) == reference
    assert v2_tokens(steps) == reference
    assert reference[3][0] == 7  # force opens with its tag
    assert reference[6][6] == 3  # the 6-token budget ends the thinking
    assert reference[0] != reference[1]  # the intervention did change something


def test_a_preempted_request_resumes_with_its_state_not_a_fresh_one():
    steps = crafted_logits(40)
    reference = transformers_tokens(steps)
    # where request 5 wanted to end its thinking and got "Wait" (9, 10) instead
    ignores = [i for i, token in enumerate(reference[5]) if token == 9 and steps[i][5].argmax() == 3]
    assert ignores, reference[5]
    at = ignores[0] + 1  # preempted between the ignore's two tokens: one ignore spent, 10 still due
    assert v1_tokens(steps, swap_at=17, pause=(at, at + 3)) == reference
    assert v2_tokens(steps, pause=(at, at + 3)) == reference


def test_a_v2_request_whose_state_was_not_kept_replays_its_output():
    """Past the parking lot's capacity a returning request is rebuilt from its tokens: its counters
    (thinking tokens, language, switches) are right again before its next step."""
    runner = V2Runner(4)
    params = SamplingParams(extra_args=request_args(PolicySpec(InterventionConfig(max_switches=0))))
    runner.admit(0, params, PROMPT, len(PROMPT))
    runner.remove(0)
    runner.admit(1, SamplingParams(), PROMPT, len(PROMPT))  # takes the slot: request 0's row is parked
    assert runner.processor.parking.take(params.extra_args["l2ray_request"]) is not None  # then evicted
    runner.admit(0, params, [*PROMPT, 5, 4, 4, 6], len(PROMPT))  # it had thought "en . . zh"
    runner.processor.apply_staged_writes()
    row = runner.processor.core.store.table[runner.slot_of[0]].tolist()
    assert row[Col.THINKING_TOKENS] == 4 and row[Col.SWITCHES] == 1 and row[Col.LANGUAGE] == 1
    logits = torch.zeros(V)
    logits[5] = 10.0  # en is most likely, but max_switches=0 keeps zh now
    assert runner.step({0: logits})[0] != 5


def test_v2_rows_still_in_chunked_prefill_are_left_alone():
    runner = V2Runner(4)
    runner.admit(
        0, SamplingParams(extra_args=request_args(PolicySpec(InterventionConfig(force="fr")))), PROMPT, 2
    )
    runner.states.prefill_len.gpu[runner.slot_of[0]] = 40  # 38 prompt tokens still to prefill
    logits = torch.zeros(V)
    logits[4] = 1.0
    assert runner.step({0: logits})[0] == 4  # the token is dropped by V2: no forced tag spent on it
    assert runner.processor.core.store.table[runner.slot_of[0], Col.THINKING_TOKENS] == 0


def test_a_v1_request_whose_slot_is_refilled_in_the_same_step_keeps_its_state_when_it_returns():
    processor = V1Processor(VOCAB, "cpu")
    first, second = (SamplingParams(extra_args=request_args(s)) for s in specs()[4:6])
    processor.update_state(BatchUpdate(1, removed=[], added=[(0, first, [2], [5, 6])], moved=[]))
    processor.apply(torch.zeros(1, V))
    state = processor.core.store.table[0].clone()
    # first is preempted and second takes its slot in one step: vLLM then reports no removal
    processor.update_state(BatchUpdate(1, removed=[], added=[(0, second, [2], [])], moved=[]))
    processor.core.store.flush()
    assert processor.core.store.table[0, Col.SWITCHES] == 0
    processor.update_state(BatchUpdate(2, removed=[], added=[(1, first, [2], [5, 6])], moved=[]))
    assert torch.equal(processor.core.store.table[1], state) and state[Col.SWITCHES] == 1
    assert processor.rows[1].seen == 2


def test_removed_rows_and_rows_without_a_spec_are_left_alone():
    processor = V1Processor(VOCAB, "cpu")
    forced = SamplingParams(extra_args=request_args(specs()[3]))
    added = [(0, forced, [2], []), (1, SamplingParams(), [2], [])]
    processor.update_state(BatchUpdate(2, removed=[], added=added, moved=[]))
    logits = torch.zeros(2, V)
    out = processor.apply(logits.clone())
    assert out[0].argmax() == 7 and torch.equal(out[1], logits[1])
    processor.update_state(BatchUpdate(1, removed=[0], added=[], moved=[]))
    assert torch.equal(processor.apply(logits.clone()), logits)


def test_a_malformed_spec_is_refused_when_the_request_arrives():
    for validate in (L2rayLogitsProcessor.validate_params, ModelRunnerV2Processor.validate_params):
        with pytest.raises(PolicyError, match="malformed l2ray policy spec"):
            validate(SamplingParams(extra_args={SPEC_KEY: '{"config": {}}'}))
        with pytest.raises(PolicyError, match="malformed l2ray policy spec"):
            validate(SamplingParams(extra_args={SPEC_KEY: '{"config": {"boost": ["xx"]}, "seed": 1}'}))
        validate(SamplingParams(extra_args=request_args(specs()[1])))


def test_a_spec_the_model_cannot_carry_is_declined_not_a_crash(caplog):
    """A client that bypassed l2ray's codec names a language the model has no tag for: the engine
    decodes that request without the intervention and says so; it does not die."""
    runner = V2Runner(2)
    params = SamplingParams(extra_args=request_args(PolicySpec(InterventionConfig(force="ja"))))
    runner.admit(0, params, PROMPT, 2)
    assert "lacks" in caplog.text
    assert runner.processor.core.needs(np.array([runner.slot_of[0]])).any is False


def test_vllm_loads_the_one_class_as_the_adapter_of_either_model_runner(student_path):
    """Both runners' loaders accept `L2rayLogitsProcessor`; built with a runner's arguments it is that
    runner's adapter, reading the model's tags once; speculative decoding is refused."""
    from vllm.v1.sample.logits_processor import _load_custom_logitsprocs
    from vllm.v1.worker.gpu.sample.logits_processor.loader import _load_v2_logitsprocs_by_fqcns

    name = "l2ray.decode.vllm_processor:L2rayLogitsProcessor"
    assert _load_custom_logitsprocs([name]) == [L2rayLogitsProcessor]
    assert _load_v2_logitsprocs_by_fqcns([name]) == [L2rayLogitsProcessor]
    config = SimpleNamespace(
        model_config=SimpleNamespace(tokenizer=str(student_path)),
        scheduler_config=SimpleNamespace(max_num_seqs=8),
        speculative_config=None,
    )
    v1 = L2rayLogitsProcessor(config, torch.device("cpu"), False)
    assert isinstance(v1, V1Processor) and v1.core.store.size == 8 and "zh" in v1.core.codes
    v2 = L2rayLogitsProcessor(config, V2Runner(3).states)
    assert isinstance(v2, ModelRunnerV2Processor) and v2.core.store.size == 3
    config.speculative_config = object()
    with pytest.raises(ValueError, match="speculative decoding"):
        L2rayLogitsProcessor(config, torch.device("cpu"), False)


def test_a_model_whose_head_size_the_cpu_backend_lacks_is_refused_before_an_engine_starts(student_path):
    from vllm.platforms import current_platform

    from l2ray.decode.vllm_engine import EngineModelError, engine_kwargs
    from l2ray.recipe import VllmEngineConfig
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
    assert "ru" in expected[0].tag_mix and "ru" not in expected[3].tag_mix
    assert expected[2].text != expected[0].text
    # Through vLLM the intervention shifts the language mix of the thinking the way it says.
    share = [done.tag_mix for done in got]
    assert share[2].get("zh", 0.0) > share[0].get("zh", 0.0)  # boost zh
    assert share[4].get("en", 0.0) > share[0].get("en", 0.0)  # boost en
    assert share[0].get("ru", 0.0) + share[0].get("ja", 0.0) > 0.0
    assert share[3].get("ru", 0.0) + share[3].get("ja", 0.0) == 0.0  # suppress ru, ja


@pytest.mark.slow
def test_an_engine_leaves_this_processs_environment_as_it_found_it(vllm_engine):
    """vLLM's CPU platform writes LD_PRELOAD (torch's libgomp), LOCAL_WORLD_SIZE and thread variables
    into os.environ for its engine processes; left there, every process started later inherits them
    (a Ray cluster started after an engine trained 3 × slower). The session's engine is built: none
    of it stayed."""
    import os

    assert vllm_engine.complete([DecodeRequest([1, 2, 3], 2)])[0].completion_tokens == 2
    leaked = {
        name: os.environ.get(name) for name in ("LD_PRELOAD", "LOCAL_WORLD_SIZE", "NUMEXPR_MAX_THREADS")
    }
    assert "libgomp" not in (leaked["LD_PRELOAD"] or "") and leaked["LOCAL_WORLD_SIZE"] is None, leaked
    assert (
        "VLLM_CPU_KVCACHE_SPACE" not in os.environ and "TORCHINDUCTOR_CPP_DYNAMIC_THREADS" not in os.environ
    )


def test_the_engine_environment_is_set_while_an_engine_starts_and_undone_after():
    import os

    from l2ray.decode.vllm_engine import engine_environment
    from l2ray.recipe import VllmEngineConfig

    before = dict(os.environ)
    with engine_environment(VllmEngineConfig(cpu_kv_cache_gib=2)):
        assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "2"
        assert os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
        os.environ["LD_PRELOAD"] = "libgomp.so.1"  # what vLLM's CPU platform does meanwhile
    assert dict(os.environ) == before
