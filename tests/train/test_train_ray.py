"""End-to-end training on a real Ray cluster (2 CPU workers) with real MLflow stores.

Two ``fit()`` runs (plus one resumed run) keep this file inside its time budget:
- full fine-tuning against the session's ``mlflow server`` behind its auth app on PostgreSQL (the
  driver and the rank-0 worker authenticate with the session's credentials), a worker failing once;
- LoRA on a sqlite store: merged-model round trip through the registry, then ``resume``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from transformers import AutoModelForCausalLM, AutoTokenizer

from l2ray.student.resolve import load_student, resolve_student
from l2ray.train.api import train
from l2ray.train.mix import TrainDataError
from l2ray.train.model import MODEL_DIR, STATE_FILE, TRAINER_STATE, read_state

pytestmark = pytest.mark.slow


def test_full_training_survives_a_worker_failure_and_registers_a_model(
    auth_mlflow, ray_cluster, tmp_path, traces_dir, make_recipe
):
    url = auth_mlflow.ready()
    recipe = make_recipe("full-ft", tracking_uri=url, fail_at_step=3)
    result = train(recipe, traces_dir)

    assert result.steps == 6 and result.rows == 14 and result.model_uri == "models:/full-ft/1"
    assert result.truncated_examples > 0 and result.truncated_tokens > 0  # max_seq_len 192: counted
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    runs = client.search_runs([result.experiment_id])
    assert [r.info.run_id for r in runs] == [result.run_id]  # one run, across the worker restart
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.001" and run.data.params["train.mode"] == "full"
    assert {a.path for a in client.list_artifacts(result.run_id)} >= {"recipe.yaml", "data_summary.json"}

    losses = {m.step: m.value for m in client.get_metric_history(result.run_id, "loss")}
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]  # the global step continued after the restart
    assert losses[6] < losses[1]
    resumed = client.get_metric_history(result.run_id, "resumed_from_step")
    assert [m.value for m in resumed] == [2.0]  # the failing attempt died at step 3; checkpoint 2
    for name in ("lr", "tokens", "step_seconds", "tokens_per_s"):
        assert len(client.get_metric_history(result.run_id, name)) == 6

    checkpoint = Path(result.checkpoint_path)
    assert read_state(checkpoint)["step"] == 6
    assert (checkpoint / TRAINER_STATE).is_file() and (checkpoint / MODEL_DIR / "config.json").is_file()
    kept = sorted(p for p in checkpoint.parent.glob("checkpoint_*") if p.is_dir())
    assert len(kept) == 2 and all((c / STATE_FILE).is_file() for c in kept)
    assert (recipe.run_dir / "train" / "result.json").is_file()

    version = client.get_model_version_by_alias("full-ft", "candidate")
    assert str(version.version) == "1"
    assert version.tags["data_fingerprint"] == result.data_fingerprint
    assert version.tags["code_version"].startswith("l2ray ")

    model, tokenizer = load_student(
        "models:/full-ft@candidate", tracking_uri=url, cache_dir=tmp_path / "cache"
    )
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is $2+3$?"}], add_generation_prompt=True, return_tensors="pt"
    )
    generated = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]


def test_lora_round_trip_through_the_registry_and_resume(ray_cluster, tmp_path, traces_dir, make_recipe):
    # Two rows on two workers: every step repeats the same batch, so the loss must go down. Two
    # micro-batches per step exercise gradient accumulation (DDP's no_sync on the first).
    lora = {
        "r": 8,
        "alpha": 16,
        "dropout": 0.0,
        "target_modules": ["q_proj", "v_proj", "up_proj", "down_proj"],
    }
    settings = {
        "mode": "lora",
        "lora": lora,
        "lr": 5e-3,
        "batch_size": 1,
        "grad_accum": 2,
        "mix": {"kinds": ["whole", "mixed"], "max_rows": 2},
    }
    recipe = make_recipe("lora", max_steps=4, **settings)
    result = train(recipe, traces_dir)
    assert result.rows == 2 and result.steps == 4
    client = MlflowClient(tracking_uri=recipe.tracking_uri, registry_uri=recipe.tracking_uri)
    losses = [m.value for m in sorted(client.get_metric_history(result.run_id, "loss"), key=lambda m: m.step)]
    assert losses[-1] < losses[0]

    # The registered model is the merged adapter: same logits as base + adapter, not the base's.
    from peft import PeftModel

    base_path = resolve_student("builtin:tiny", cache_dir=recipe.run_dir / "cache", config=recipe.student)
    registered = AutoModelForCausalLM.from_pretrained(
        resolve_student("models:/lora@candidate", recipe.tracking_uri, cache_dir=tmp_path / "cache")
    )
    with_adapter = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_path), Path(result.checkpoint_path) / MODEL_DIR
    )
    base = AutoModelForCausalLM.from_pretrained(base_path)
    ids = torch.tensor([[5, 17, 99, 250, 31, 7]])
    with torch.no_grad():
        logits = {
            name: m(input_ids=ids).logits
            for name, m in [("reg", registered), ("ada", with_adapter), ("base", base)]
        }
    assert torch.allclose(logits["reg"], logits["ada"], atol=1e-4)
    assert not torch.allclose(logits["reg"], logits["base"], atol=1e-3)

    # --resume refuses other data before any worker starts ...
    other_data = make_recipe(
        "lora", max_steps=6, **(settings | {"mix": {"kinds": ["original"], "max_rows": 2}})
    )
    with pytest.raises(TrainDataError, match=f"cannot resume run {result.run_id}: it trained on data"):
        train(other_data, traces_dir, resume=True)
    # ... and with the same data continues the MLflow run and Ray storage from the last checkpoint.
    longer = make_recipe("lora", max_steps=6, **settings)
    resumed = train(longer, traces_dir, resume=True)
    assert resumed.run_id == result.run_id and resumed.steps == 6 and resumed.version == "2"
    steps = sorted(m.step for m in client.get_metric_history(result.run_id, "loss"))
    assert steps == [1, 2, 3, 4, 5, 6]
    assert str(client.get_model_version_by_alias("lora", "candidate").version) == "2"


def test_fsdp2_packed_run_survives_a_failure_resumes_from_shards_and_registers_its_export(
    ray_cluster, tmp_path, traces_dir, make_recipe
):
    """FSDP2 on 2 CPU workers (gloo): packed, checkpointed layers, a worker that fails at step 3
    after the sharded checkpoint of step 2; the export registered by reference equals the shards."""
    import torch.distributed.checkpoint as dcp

    from l2ray.student.tokens import ensure_reasoning_tokens

    settings = {"strategy": "fsdp2", "packing": True, "activation_checkpointing": True, "max_steps": 4}
    recipe = make_recipe("fsdp", fail_at_step=3, batch_size=1, **settings)
    result = train(recipe, traces_dir)

    assert result.steps == 4
    client = MlflowClient(tracking_uri=recipe.tracking_uri, registry_uri=recipe.tracking_uri)
    history = {name: client.get_metric_history(result.run_id, name) for name in ("loss", "real_token_ratio")}
    assert sorted(m.step for m in history["loss"]) == [1, 2, 3, 4]
    assert [m.value for m in client.get_metric_history(result.run_id, "resumed_from_step")] == [2.0]
    assert all(0.0 < m.value <= 1.0 for m in history["real_token_ratio"])
    checkpoint = Path(result.checkpoint_path)
    assert sorted(p.name for p in checkpoint.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    weights = sorted(p.name for p in (checkpoint / "export" / "model").glob("*.safetensors"))
    assert weights == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    version = client.get_model_version_by_alias("fsdp", "candidate")
    assert version.source == str(checkpoint / "export")  # by reference: nothing copied into MLflow

    # The trained weights, read from the DCP shards in one process, rounded to bf16 as exported.
    base_path = resolve_student("builtin:tiny", cache_dir=recipe.run_dir / "cache", config=recipe.student)
    trained = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    ensure_reasoning_tokens(AutoTokenizer.from_pretrained(base_path), trained)
    state = {"model": {f"causal_lm.{k}": v for k, v in trained.state_dict().items()}}
    dcp.load(state, checkpoint_id=str(checkpoint), no_dist=True)
    trained.load_state_dict(
        {k.removeprefix("causal_lm."): v.bfloat16().float() for k, v in state["model"].items()}
    )
    exported, _ = load_student(
        "models:/fsdp@candidate", tracking_uri=recipe.tracking_uri, cache_dir=tmp_path / "c"
    )
    ids = torch.tensor([[5, 17, 99, 250, 31, 7]])
    with torch.no_grad():
        expected = trained(input_ids=ids).logits
        got = exported.float()(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    with torch.no_grad():
        assert not torch.allclose(base(input_ids=ids).logits, expected, atol=1e-3)  # it did train
