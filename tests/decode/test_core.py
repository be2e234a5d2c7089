"""The tensor core against the Python reference: the same logits, tokens and settings must give the same
edits, forced tokens, draws and counters, step for step, in every mode (property tests)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from l2ray.decode import reference
from l2ray.decode.core import PolicyCore
from l2ray.decode.policy import RequestPolicy
from l2ray.decode.slots import Col, Status
from l2ray.decode.spec import PolicySpec, ReasoningVocab, switch_draw
from l2ray.recipe import InterventionConfig

# ids: 0 pad, 1 eos, 2 <think>, 3 </think>, 4 plain, 5 en, 6 zh, 7 fr, 8..15 plain ("Wait" = 9, 10)
VOCAB = ReasoningVocab(tag_ids={"en": 5, "zh": 6, "fr": 7}, think_end_id=3, stop_ids=(1, 0), think_start_id=2)
V = 16
WAIT = (9, 10)
CODES = ["en", "zh", "fr"]


@st.composite
def specs(draw: st.DrawFn) -> PolicySpec:
    """Any intervention the config admits, over the test vocabulary."""
    boost = draw(st.lists(st.sampled_from(CODES), unique=True, max_size=2))
    suppress = draw(st.lists(st.sampled_from([c for c in CODES if c not in boost]), unique=True, max_size=2))
    mode = draw(st.sampled_from(["probability", "sign"]))
    # 0 and 1 are where the draw's outcome is known without computing it: make them common
    alpha = draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0 if mode == "probability" else -1.0, 1.0))
    force = draw(st.none() | st.sampled_from([c for c in CODES if c not in suppress]))
    config = InterventionConfig(
        boost=boost,
        suppress=suppress,
        alpha=alpha,
        alpha_mode=mode,
        beta=draw(st.floats(0.0, 8.0)),
        top_k=draw(st.integers(1, 6)),
        top_k_rule=draw(st.sampled_from(["any_tag", "each_tag"])),
        force=force,
        max_switches=draw(st.none() | st.integers(0, 3)),
        max_thinking_tokens=draw(st.none() | st.integers(0, 30)),
        num_ignore=draw(st.integers(0, 3)),
    )
    ignore = WAIT if config.num_ignore or draw(st.booleans()) else ()
    return PolicySpec(config, draw(st.integers(0, 2**40)), ignore, draw(st.booleans()))


def step_logits(noise: torch.Generator, rows: int) -> torch.Tensor:
    """Random logits where tags and ``</think>`` often sit near the top; EOS now and then."""
    logits = torch.randn(rows, V, generator=noise) * 3
    logits[:, 5:8] += torch.rand(rows, 3, generator=noise) * 4
    logits[:, 3] += torch.rand(rows, generator=noise) * 3
    logits[:, :2] -= 12.0
    return logits


def sampled(logits: torch.Tensor, noise: torch.Generator) -> torch.Tensor:
    """A token per row drawn from ``logits`` (Gumbel-max: the same draw for equal logits)."""
    gumbel = -torch.log(-torch.log(torch.rand(logits.shape, generator=noise).clamp(1e-9, 1 - 1e-9)))
    return (logits + gumbel).argmax(-1)


def assert_same_state(core: PolicyCore, slots: list[int], policies: list[RequestPolicy]) -> None:
    assert core.counters(slots) == [p.counters() for p in policies]
    table = core.store.table[slots]
    for row, policy in zip(table.tolist(), policies, strict=True):
        language = CODES.index(policy.language) if policy.language is not None else -1
        status = Status.DONE if policy.done else Status.THINKING if policy.thinking else Status.ANSWERING
        assert row[Col.LANGUAGE] == language and row[Col.STATUS] == status
        assert row[Col.IGNORES_LEFT] == policy.ignores_left
        fractional = policy.spec.draws and 0 < policy.spec.alpha_threshold < 2**32
        assert row[Col.DRAWS_SPENT] == policy.draws_spent or not fractional


@settings(max_examples=60, deadline=None)
@given(st.lists(specs(), min_size=1, max_size=6), st.integers(0, 2**31))
def test_the_transformers_order_matches_the_reference(batch, seed):
    """Tag edits, a sampled token, budget forcing on it: what the transformers processors do."""
    noise = torch.Generator().manual_seed(seed)
    policies = [RequestPolicy.from_spec(spec, VOCAB) for spec in batch]
    core = PolicyCore(VOCAB)
    for slot, spec in enumerate(batch):
        core.admit(slot, spec)
    needs = core.needs(slice(0, len(batch)))
    for _ in range(30):
        logits = step_logits(noise, len(batch))
        rows = core.rows(len(batch))
        core.begin(rows, needs)
        expected = reference.tag_edits(policies, logits)
        edited = core.write(logits, core.tag_pass(rows, logits, needs))
        assert torch.equal(edited, expected)
        chosen = sampled(edited, noise)
        expected = reference.budget_edits(policies, chosen.tolist(), edited)
        token, forced = core.budget_pass(rows, chosen if needs.ignore else None)
        final = core.write(edited, None, token, forced)
        assert torch.equal(final, expected)
        emitted = torch.where(forced, token, chosen)
        for policy, emitted_token in zip(policies, emitted.tolist(), strict=True):
            policy.observe(emitted_token)
        core.observe(core.rows(len(batch)), emitted)
    assert_same_state(core, list(range(len(batch))), policies)


@settings(max_examples=60, deadline=None)
@given(st.lists(specs(), min_size=1, max_size=6), st.integers(0, 2**31))
def test_the_vllm_order_matches_the_reference_while_rows_move_between_slots(batch, seed):
    """vLLM's step (edits before sampling, s1's ignore on the most likely token), with the rows mapped to
    shuffled slots each step as Model Runner V2 does, and requests parked and restored elsewhere."""
    noise = torch.Generator().manual_seed(seed)
    policies = [RequestPolicy.from_spec(spec, VOCAB) for spec in batch]
    core = PolicyCore(VOCAB, slots=2 * len(batch))
    slot_of = list(range(len(batch)))
    for request, spec in enumerate(batch):
        core.admit(slot_of[request], spec)
    for step in range(30):
        if step % 7 == 3:  # a request leaves its slot and comes back in a free one
            request = step % len(batch)
            parked = core.store.park(slot_of[request])
            core.store.release(slot_of[request])
            free = next(s for s in range(2 * len(batch)) if s not in slot_of)
            core.store.restore(free, parked)
            slot_of[request] = free
        order = torch.randperm(len(batch), generator=noise).tolist()
        slots = torch.tensor([slot_of[r] for r in order])
        logits = step_logits(noise, len(batch))
        expected = reference.vllm_step([policies[r] for r in order], logits)
        rows = core.rows(len(batch), slots)
        edited = core.before_sampling(rows, logits.clone(), core.needs(slots.numpy()))
        assert torch.equal(edited, expected)
        emitted = sampled(edited, noise)
        core.observe(rows, emitted)
        core.commit(rows)
        for row, request in enumerate(order):
            policies[request].observe(int(emitted[row]))
    assert_same_state(core, slot_of, policies)


def test_the_draws_are_the_same_numbers_in_python_and_in_tensors():
    spec = PolicySpec(InterventionConfig(boost=["zh"], alpha=0.3), seed=2**63 + 5)
    indexes = torch.arange(1000)
    drawn = switch_draw(torch.full((1000,), spec.draw_key), indexes).tolist()
    assert drawn == [switch_draw(spec.draw_key, i) for i in range(1000)]
    assert all(0 <= d < 2**32 for d in drawn)
    share = sum(d < spec.alpha_threshold for d in drawn) / len(drawn)
    assert 0.25 < share < 0.35  # alpha reads as a probability


def test_a_tag_with_a_banned_logit_is_never_a_switch_point():
    """Fewer than top_k finite logits (a grammar masked the rest): -inf tags do not tie with the k-th."""
    core = PolicyCore(VOCAB)
    core.admit(0, PolicySpec(InterventionConfig(boost=["zh"], beta=5.0, top_k=4)))
    logits = torch.full((1, V), -math.inf)
    logits[0, 4] = 1.0
    rows, needs = core.rows(1), core.needs(slice(0, 1))
    core.begin(rows, needs)
    edit = core.tag_pass(rows, logits, needs)
    assert edit is not None and torch.isinf(edit.values).all()  # zh stayed -inf: no bias


@pytest.mark.parametrize("inplace", [False, True])
def test_write_leaves_the_input_alone_unless_asked(inplace):
    core = PolicyCore(VOCAB)
    core.admit(0, PolicySpec(InterventionConfig(force="fr")))
    core.admit(1, PolicySpec(InterventionConfig(suppress=["en"], beta=3.0, top_k=16)))
    logits = torch.randn(2, V)
    before = logits.clone()
    rows, needs = core.rows(2), core.needs(slice(0, 2))
    core.begin(rows, needs)
    out = core.write(logits, core.tag_pass(rows, logits, needs), inplace=inplace)
    assert out[0].argmax() == 7 and out[1, 5] == pytest.approx(before[1, 5] - 3.0)
    assert (out is logits) == inplace and torch.equal(logits, before) != inplace


def test_slots_grow_and_a_long_ignore_str_widens_the_table():
    core = PolicyCore(VOCAB)
    long_ignore = tuple(range(8, 16)) * 3
    core.admit(40, PolicySpec(InterventionConfig(num_ignore=1), ignore_ids=long_ignore))
    rows, needs = core.rows(41), core.needs(slice(0, 41))
    assert core.store.size >= 41 and core.store.ignore.shape[1] == len(long_ignore)
    core.begin(rows, needs)
    token, forced = core.budget_pass(rows, torch.full((41,), 3))
    assert forced.tolist() == [False] * 40 + [True] and int(token[40]) == 8
