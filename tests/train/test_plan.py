"""The memory plan: paper recipes fit their GPUs, misfits name the knob, and the sharded state's
figures equal what 2 real gloo ranks allocate."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from l2ray.recipe import TrainConfig, load_recipe
from l2ray.train.local_ranks import run_ranks
from l2ray.train.memory_plan import GIB, TrainPlanError, memory_plan, refuse_unless_fits, shape_of

PAPER = sorted((Path(__file__).resolve().parents[2] / "configs" / "paper").glob("[!_]*.yaml"))


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_every_paper_recipe_fits_its_gpus_and_hosts(path):
    recipe = load_recipe(path)
    plan = refuse_unless_fits(shape_of(recipe.student.model), recipe.train)
    assert plan.gpu_total <= recipe.train.gpu_memory_gib * GIB
    assert plan.activations_with_checkpointing < plan.activations_without_checkpointing / 10


def test_a_plan_that_does_not_fit_names_the_knob():
    shape = shape_of("Qwen/Qwen2.5-32B-Instruct")
    assert shape.params() == pytest.approx(32.76e9, rel=1e-3)  # Qwen2.5-32B's published size
    paper = {"strategy": "fsdp2", "use_gpu": True, "max_seq_len": 16384, "activation_checkpointing": True}
    with pytest.raises(TrainPlanError, match=r"per GPU > 80.0 GiB .*set train.num_workers: 16$"):
        refuse_unless_fits(shape, TrainConfig(num_workers=8, **paper))
    with pytest.raises(TrainPlanError, match=r"set train.activation_checkpointing: true$"):
        refuse_unless_fits(
            shape, TrainConfig(num_workers=16, **(paper | {"activation_checkpointing": False}))
        )
    with pytest.raises(TrainPlanError, match=r"set train\.strategy: fsdp2"):
        refuse_unless_fits(shape_of("Qwen/Qwen2.5-7B"), TrainConfig(num_workers=8, use_gpu=True))
    # DDP holds the whole fp32 state on every GPU; FSDP2 a 1/N share of it.
    ddp = memory_plan(shape, TrainConfig(num_workers=16, use_gpu=True))
    fsdp = memory_plan(shape, TrainConfig(num_workers=16, use_gpu=True, strategy="fsdp2"))
    assert ddp.gpu["optimizer"] == pytest.approx(16 * fsdp.gpu["optimizer"], rel=1e-6)


def _allocated_state_bytes(rank: int, base_path: str) -> dict[str, int]:
    """Bytes this rank holds in parameter shards, gradient shards and Adam state after one step."""
    from test_fsdp import examples

    from l2ray.train.examples import collate
    from l2ray.train.fsdp import ShardSettings, build_sharded

    model, _, _ = build_sharded(base_path, torch.device("cpu"), ShardSettings(bf16=True))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_sum, _ = model(**collate(examples(2, seed=rank), pad_token_id=0))
    loss_sum.backward()
    optimizer.step()
    local = [p.to_local() for p in model.parameters()]
    grads = [p.grad.to_local() for p in model.parameters()]
    moments = [t.to_local() for s in optimizer.state.values() for t in s.values() if t.dim() > 0]
    size = lambda tensors: sum(t.numel() * t.element_size() for t in tensors)  # noqa: E731
    return {"parameters": size(local), "gradients": size(grads), "optimizer": size(moments)}


@pytest.mark.slow
def test_the_planned_sharded_state_is_what_two_ranks_allocate(student_path, tmp_path):
    from transformers import AutoModelForCausalLM, Qwen2Config

    # A Qwen2.5-shaped student (GQA, SwiGLU, untied head), random init, small enough for CI.
    config = Qwen2Config(
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=704,
        vocab_size=8192,
        tie_word_embeddings=False,
    )
    base = tmp_path / "qwen-shaped"
    AutoModelForCausalLM.from_config(config).save_pretrained(base)
    for item in Path(student_path).glob("*token*"):
        shutil.copy(item, base / item.name)
    plan = memory_plan(shape_of(str(base)), TrainConfig(strategy="fsdp2", num_workers=2))
    for rank in run_ranks(_allocated_state_bytes, tmp_path / "ranks", str(base)):
        for item in ("parameters", "gradients", "optimizer"):
            assert rank[item] == pytest.approx(plan.gpu[item], rel=0.15), item


def test_train_refuses_a_plan_that_does_not_fit_before_any_worker_starts(traces_dir, make_recipe):
    from l2ray.train.api import train

    recipe = make_recipe("too-big", use_gpu=True, gpu_memory_gib=0.01)
    with pytest.raises(TrainPlanError, match=r"per GPU > 0\.0 GiB"):
        train(recipe, traces_dir)
    assert not (recipe.run_dir / "train" / "run.json").exists()  # no MLflow run, no Ray run


def test_the_cli_prints_the_plan_of_a_paper_recipe():
    from typer.testing import CliRunner

    from l2ray.cli import app

    result = CliRunner().invoke(app, ["train", "plan", "--config", str(PAPER[0])], terminal_width=200)
    assert result.exit_code == 0, result.output
    for item in ("parameters", "optimizer", "activations without checkpointing", "loading copy"):
        assert item in result.output
    assert result.output.rstrip().endswith("fits")
