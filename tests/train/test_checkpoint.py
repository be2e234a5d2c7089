"""Sharded DCP checkpoints on 2 real gloo ranks: a run stopped after step 2 and resumed from disk
continues with the same weights, Adam moments, schedule and data, so its losses equal an
uninterrupted run's."""

from __future__ import annotations

import pytest
import torch
from test_fsdp import examples
from transformers import get_scheduler

from l2ray.train.checkpoint import is_sharded, load_sharded, save_sharded
from l2ray.train.examples import collate, micro_batch
from l2ray.train.fsdp import ShardSettings, build_sharded
from l2ray.train.local_ranks import run_ranks
from l2ray.train.model import read_state
from l2ray.train.step import optimizer_step

pytestmark = pytest.mark.slow

STEPS = 4


def _student(student_path: str, load_weights: bool = True):
    settings = ShardSettings(bf16=False, chunk_tokens=16)
    model, _, _ = build_sharded(student_path, torch.device("cpu"), settings, load_weights=load_weights)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=1, num_training_steps=STEPS)
    return model, optimizer, scheduler


def _steps(run, rank: int, first: int, last: int) -> list[float]:
    model, optimizer, scheduler = run
    mine = examples(6, seed=7)[3 * rank : 3 * rank + 3]
    losses = []
    for step in range(first, last + 1):
        batch = collate(micro_batch(mine, step - 1, 2, seed=0, rank=rank), pad_token_id=0)
        losses.append(optimizer_step(model, optimizer, [batch], max_grad_norm=1.0).loss)
        scheduler.step()
    return losses


def _uninterrupted_and_resumed(rank: int, student_path: str, folder: str) -> dict[str, object]:
    straight = _steps(_student(student_path), rank, 1, STEPS)
    stopped = _student(student_path)
    before = _steps(stopped, rank, 1, 2)
    save_sharded(folder, *stopped, {"step": 2, "micro_batches": 2})
    del stopped  # the resumed run starts from uninitialised shards: only the checkpoint fills them
    resumed = _student(student_path, load_weights=False)
    state = load_sharded(folder, *resumed)
    after = _steps(resumed, rank, state["step"] + 1, STEPS)
    return {"straight": straight, "resumed": before + after}


def test_a_resumed_run_repeats_the_uninterrupted_losses(student_path, tmp_path):
    folder = tmp_path / "checkpoint"
    ranks = run_ranks(_uninterrupted_and_resumed, tmp_path / "ranks", str(student_path), str(folder))

    assert sorted(p.name for p in folder.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert is_sharded(read_state(folder))
    for rank in ranks:
        assert rank["resumed"] == pytest.approx(rank["straight"], rel=1e-6)
        assert rank["straight"][-1] < rank["straight"][0]
    assert ranks[0]["straight"] == ranks[1]["straight"]  # the loss is over both ranks' targets
