"""Packing: no attention crosses a trace boundary, and the packed loss is the sum of unpacked losses."""

from __future__ import annotations

import torch
from test_fsdp import examples
from transformers import AutoModelForCausalLM

from l2ray.train.examples import Example, collate
from l2ray.train.loss import LossModel
from l2ray.train.packing import collate_packed, pack_examples


def test_packs_hold_every_trace_once_within_the_length():
    rows = examples(9, seed=3)
    packs = pack_examples(rows, max_seq_len=64, seed=0)
    assert sorted(id(e) for pack in packs for e in pack) == sorted(id(e) for e in rows)
    assert all(sum(len(e.input_ids) for e in pack) <= 64 for pack in packs)
    assert len(packs) < len(rows)  # traces of 12–30 tokens share rows of 64
    assert pack_examples(rows, 64, seed=0) == packs  # a resumed run rebuilds the same packs


def test_packed_loss_and_gradient_equal_the_sum_over_single_traces(student_path):
    model = AutoModelForCausalLM.from_pretrained(student_path, dtype=torch.float32)
    loss_model = LossModel(model, chunk_tokens=16)
    rows = examples(3, seed=4)
    unpacked = torch.zeros(())
    for row in rows:
        loss_sum, _ = loss_model(**collate([row], pad_token_id=0))
        unpacked = unpacked + loss_sum
    unpacked.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    # Two packed rows of different lengths: the shorter one ends in a padding segment.
    batch = collate_packed([rows, rows[:1]], pad_token_id=0)
    assert int(batch.pop("real_tokens")) == sum(len(r.input_ids) for r in rows) + len(rows[0].input_ids)
    packed, _ = loss_model(**batch)
    single, _ = loss_model(**collate([rows[0]], pad_token_id=0))
    assert torch.allclose(packed, unpacked.detach() + single.detach(), rtol=1e-5)

    model.zero_grad()
    packed_once, _ = loss_model(**{k: v for k, v in collate_packed([rows]).items() if k != "real_tokens"})
    packed_once.backward()
    assert torch.allclose(packed_once, unpacked.detach(), rtol=1e-5)
    for name, parameter in model.named_parameters():
        assert torch.allclose(parameter.grad, expected[name], atol=1e-5), name


def test_a_trace_cannot_see_the_trace_packed_before_it(student_path):
    model = AutoModelForCausalLM.from_pretrained(student_path, dtype=torch.float32).eval()
    first, second = examples(2, seed=5)
    changed = Example([(t + 7) % 4000 for t in first.input_ids], first.labels, False, 0)
    batches = [collate_packed([[head, second]]) for head in (first, changed)]
    with torch.no_grad():
        logits = [
            model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits
            for b in batches
        ]
    n = len(first.input_ids)
    assert not torch.allclose(logits[0][0, :n], logits[1][0, :n])
    assert torch.allclose(logits[0][0, n:], logits[1][0, n:], atol=1e-5)
