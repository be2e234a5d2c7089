"""FSDP2 on 2 real gloo ranks: rank-0 broadcast load, accumulation equality, the chunked loss."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from l2ray.train.examples import Example, collate, without_targets
from l2ray.train.fsdp import ShardSettings, build_sharded
from l2ray.train.local_ranks import run_ranks
from l2ray.train.loss import LossModel
from l2ray.train.step import optimizer_step


def examples(count: int, seed: int) -> list[Example]:
    """Traces of different lengths whose first tokens are prompt (no target)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        ids = [rng.randrange(5, 4000) for _ in range(rng.randrange(12, 30))]
        prompt = rng.randrange(2, 6)
        rows.append(Example(ids, [-100] * prompt + ids[prompt:], False, 0))
    return rows


def test_chunked_loss_equals_transformers_loss_and_gradient(student_path):
    model = AutoModelForCausalLM.from_pretrained(student_path, dtype=torch.float32)
    batch = collate(examples(3, seed=1), pad_token_id=0)
    reference = model(**batch)
    targets = int((batch["labels"][:, 1:] != -100).sum())
    (reference.loss * targets).backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    loss_sum, counted = LossModel(model, chunk_tokens=7)(**batch)  # several chunks, a ragged last one
    loss_sum.backward()
    assert int(counted) == targets
    assert torch.allclose(loss_sum, reference.loss * targets, rtol=1e-5)
    for name, parameter in model.named_parameters():
        assert torch.allclose(parameter.grad, expected[name], atol=1e-5), name


def _sharded_updates(rank: int, student_path: str) -> dict[str, object]:
    """Per case, the full weights after one SGD step on this rank's share of the same 4 traces."""
    torch.manual_seed(0)
    mine = examples(4, seed=2)[2 * rank : 2 * rank + 2]
    # A rank without rows of its own computes on a stand-in without targets (a mix smaller than
    # the worker count): the update must be the one of rank 0's rows alone.
    alone = mine if rank == 0 else [without_targets(e) for e in mine]
    cases = {"batch2": [mine], "accum2x1": [mine[:1], mine[1:]], "rank0_alone": [alone]}
    device = torch.device("cpu")
    out: dict[str, object] = {}
    for name, micro in cases.items():
        model, _, _ = build_sharded(student_path, device, ShardSettings(bf16=False, chunk_tokens=16))
        if name == "batch2":
            out["loaded"] = {n: p.full_tensor().clone() for n, p in model.causal_lm.named_parameters()}
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        totals = optimizer_step(model, optimizer, [collate(b, 0) for b in micro], max_grad_norm=1e9)
        out[name] = {n: p.full_tensor().clone() for n, p in model.causal_lm.named_parameters()}
        out[name + "_loss"] = totals.loss
    model, _, _ = build_sharded(student_path, device, ShardSettings(bf16=True, chunk_tokens=16))
    out["param_dtypes"] = {p.dtype for p in model.parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    out["bf16_loss"] = optimizer_step(model, optimizer, [collate(mine, 0)], max_grad_norm=1e9).loss
    out["tied"] = model.causal_lm.lm_head.weight is model.causal_lm.get_input_embeddings().weight
    return out


@pytest.mark.slow
def test_fsdp2_load_and_accumulation_equal_one_unsharded_batch(student_path, tmp_path):
    ranks = run_ranks(_sharded_updates, tmp_path / "ranks", str(student_path))

    # The reference: one process, the unsharded fp32 student, all 4 traces in one batch.
    def reference(rows: list[Example]):
        model = AutoModelForCausalLM.from_pretrained(student_path, dtype=torch.float32)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        totals = optimizer_step(LossModel(model), optimizer, [collate(rows, 0)], max_grad_norm=1e9)
        return model, before, totals

    model, before, totals = reference(examples(4, seed=2))
    rank0_model, _, rank0_totals = reference(examples(4, seed=2)[:2])

    for rank in ranks:
        assert rank["tied"] and rank["param_dtypes"] == {torch.float32}  # fp32 master shards
        for name, parameter in model.named_parameters():
            assert torch.equal(rank["loaded"][name], before[name]), name  # rank 0's copy reached every rank
            for case in ("batch2", "accum2x1"):
                assert torch.allclose(rank[case][name], parameter.detach(), atol=2e-5), (case, name)
        assert rank["batch2_loss"] == pytest.approx(totals.loss, rel=1e-5)
        assert rank["accum2x1_loss"] == pytest.approx(totals.loss, rel=1e-5)
        assert rank["bf16_loss"] == pytest.approx(totals.loss, rel=2e-2)  # bf16 compute, same model
        assert rank["rank0_alone_loss"] == pytest.approx(rank0_totals.loss, rel=1e-5)
        for name, parameter in rank0_model.named_parameters():
            assert torch.allclose(rank["rank0_alone"][name], parameter.detach(), atol=2e-5), name
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())  # the step moved it
