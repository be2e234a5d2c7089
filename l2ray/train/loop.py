"""The Ray Train worker loop: every worker runs `train_loop_per_worker` with the same `LoopSettings`.

Each worker tokenizes its shard of the mix (`l2ray.train.schedule.rank_items`), trains for the
number of optimizer steps the driver planned from the same items (`l2ray.train.schedule.run_steps`:
the same on every rank, so every rank calls ``ray.train.report`` equally often), and
rank 0 logs step metrics to MLflow. Under DDP rank 0 writes full checkpoints; under FSDP2 every
rank writes its DCP shards and Ray Train merges them into one checkpoint. After a worker failure
Ray Train restarts the group; the loop then resumes from ``ray.train.get_checkpoint()`` (weights,
Adam moments, schedule) and the global step and data position continue where it left them.
"""

from __future__ import annotations

import contextlib
import functools
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from l2ray.recipe import TrainConfig
from l2ray.train.examples import collate, micro_batch
from l2ray.train.mlflow_run import StepMetricWriter, Tracker
from l2ray.train.model import (
    load_for_training,
    read_state,
    read_trainer_state,
    save_checkpoint,
    training_tokenizer,
)
from l2ray.train.packing import collate_packed
from l2ray.train.schedule import StepPlan, rank_items
from l2ray.train.step import all_reduce_sum, optimizer_step


class LoopSettings(BaseModel):
    """Everything a worker needs, computed on the driver (plain data: it travels to every worker).

    Args:
        train: the recipe's training section, as it is.
        steps: the run's optimizer steps (`l2ray.train.schedule.run_steps`).
        base_path: the resolved student folder.
        seed: the recipe's seed (data order, packing, dropout).
        tracking_uri: the MLflow store rank 0 logs into.
        run_id: the driver's MLflow run.
        fault_marker: where the fault-injection hook records that it fired (``train.fail_at_step``).
    """

    train: TrainConfig
    steps: StepPlan
    base_path: str
    seed: int
    tracking_uri: str
    run_id: str
    fault_marker: str | None = None


class InjectedFailure(RuntimeError):
    """Raised once by the fault-injection test hook (``train.fail_at_step``)."""


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point (``TorchTrainer(train_loop_per_worker, train_loop_config=settings)``):
    restore, prepare, then train and report step by step."""
    import ray.train
    from ray.train.torch import get_device

    settings = LoopSettings.model_validate(config)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = get_device()
    data = _worker_data(settings, training_tokenizer(settings.base_path), rank, world, device)
    run = _start(settings, device)
    writer = _rank_zero_writer(settings, rank)
    if writer is not None:
        resumed = {"resumed_from_step": run.start_step} if run.start_step else {}
        writer.add(data.summary | resumed, max(run.start_step, 1))
    try:
        _train_steps(settings, run, data, rank, world, writer)
    finally:  # a failing step still leaves every finished step's metrics in the run
        if writer is not None:
            writer.flush()


@dataclass
class _Run:
    """What the step loop works on: the (wrapped) `LossModel`, its optimizer and schedule."""

    model: Any
    tokenizer: Any
    optimizer: Any
    scheduler: Any
    added: list[str]
    start_step: int = 0


@dataclass
class _WorkerData:
    """This worker's micro-batch items, how to collate them, and data statistics over all ranks."""

    items: list[Any]
    collate: Any
    summary: dict[str, float]


def _start(settings: LoopSettings, device: Any) -> _Run:
    """The model to train, from the base or from the latest checkpoint (``ray.train.get_checkpoint``)."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    with checkpoint.as_directory() if checkpoint else contextlib.nullcontext(None) as folder:
        if settings.train.strategy == "fsdp2":
            return _start_sharded(settings, device, folder)
        return _start_replicated(settings, device, folder)


def _start_sharded(settings: LoopSettings, device: Any, folder: str | None) -> _Run:
    """FSDP2: meta init and sharding; weights from rank 0's copy, or from this rank's DCP shards."""
    from l2ray.train.checkpoint import load_sharded
    from l2ray.train.fsdp import ShardSettings, build_sharded

    model, tokenizer, added = build_sharded(
        settings.base_path, device, ShardSettings.of(settings.train), load_weights=folder is None
    )
    optimizer = _optimizer(list(model.parameters()), settings)
    scheduler = _scheduler(optimizer, settings)
    run = _Run(model, tokenizer, optimizer, scheduler, added)
    if folder is not None:
        run.start_step = load_sharded(folder, model, optimizer, scheduler)["step"]
    return run


def _start_replicated(settings: LoopSettings, device: Any, folder: str | None) -> _Run:
    """DDP: every worker loads the whole student (or the full checkpoint) and wraps it."""
    from ray.train.torch import prepare_model

    from l2ray.train.loss import LossModel

    config = settings.train
    model, tokenizer, added = load_for_training(settings.base_path, config.mode, config.lora, folder)
    model.train()  # from_pretrained returns eval mode, which would switch LoRA dropout off
    if config.activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    wrapped = prepare_model(LossModel(model, config.loss_chunk_tokens))
    optimizer = _optimizer([p for p in wrapped.parameters() if p.requires_grad], settings)
    scheduler = _scheduler(optimizer, settings)
    run = _Run(wrapped, tokenizer, optimizer, scheduler, added)
    if folder is not None:
        run.start_step = read_state(folder)["step"]
        trainer_state = read_trainer_state(folder)
        optimizer.load_state_dict(trainer_state["optimizer"])
        scheduler.load_state_dict(trainer_state["scheduler"])
    return run


def _worker_data(settings: LoopSettings, tokenizer: Any, rank: int, world: int, device: Any) -> _WorkerData:
    """This worker's fixed share of the mix, tokenized (and packed); data statistics over all ranks."""
    import ray.train

    everything = list(ray.train.get_dataset_shard("train").iter_rows())
    items, examples = rank_items(everything, rank, world, tokenizer, settings.train, settings.seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    collate_items = collate_packed if settings.train.packing else collate
    stats = all_reduce_sum(
        [sum(e.truncated for e in examples), sum(e.dropped_tokens for e in examples), len(examples)], device
    )
    summary = {"truncated_examples": stats[0], "truncated_tokens": stats[1], "examples": stats[2]}
    return _WorkerData(items, functools.partial(collate_items, pad_token_id=pad_id), summary)


def _train_steps(
    settings: LoopSettings,
    run: _Run,
    data: _WorkerData,
    rank: int,
    world: int,
    writer: StepMetricWriter | None,
) -> None:
    """Every optimizer step from the restored one on: step, log, checkpoint."""
    import torch
    from ray.train.torch import get_device

    device = get_device()
    # Throughput spans one step's end to the next, so logging and checkpointing count against it.
    last = time.perf_counter()
    for step in range(run.start_step + 1, settings.steps.total_steps + 1):
        _maybe_inject_failure(settings, step, rank, world)
        # Dropout draws from a seed fixed by (seed, rank, step): a resumed run repeats them exactly.
        torch.manual_seed(settings.seed * 1_000_003 + rank * 100_003 + step)
        lr = run.optimizer.param_groups[0]["lr"]  # the rate this step used, before the schedule moves
        totals = optimizer_step(
            run.model,
            run.optimizer,
            _step_batches(settings, data, step, rank, device),
            settings.train.max_grad_norm,
            autocast_bf16=settings.train.uses_bf16 and settings.train.strategy == "ddp",
        )
        run.scheduler.step()
        tokens, computed = all_reduce_sum([totals.tokens, totals.computed_tokens], device)
        now = time.perf_counter()
        elapsed, last = now - last, now
        metrics = {
            "step": step,
            "epoch": step / settings.steps.steps_per_epoch,
            "loss": totals.loss,
            "lr": lr,
            "tokens": tokens,
            "computed_tokens": computed,
            "real_token_ratio": tokens / max(computed, 1),
            "step_seconds": elapsed,
            "tokens_per_s": tokens / elapsed,
            "target_tokens": totals.targets,
        } | data.summary
        if writer is not None:
            writer.add({k: v for k, v in metrics.items() if k != "step"}, step)
        if step % settings.train.checkpoint_every == 0 or step == settings.steps.total_steps:
            if writer is not None:  # a checkpointed step's metrics are durable before it is
                writer.flush()
            _report_with_checkpoint(run, settings, metrics, rank)


def _step_batches(settings: LoopSettings, data: _WorkerData, step: int, rank: int, device: Any) -> list[Any]:
    """The ``grad_accum`` micro-batches of ``step``: a function of the step, so resuming repeats them."""
    first = (step - 1) * settings.train.grad_accum
    batches = [
        data.collate(micro_batch(data.items, first + k, settings.train.batch_size, settings.seed, rank))
        for k in range(settings.train.grad_accum)
    ]
    return [{name: tensor.to(device) for name, tensor in batch.items()} for batch in batches]


def _optimizer(parameters: list[Any], settings: LoopSettings) -> Any:
    """AdamW, with the fused kernel where the device has one (HF ``Trainer``'s default as well)."""
    import torch

    config = settings.train
    options = {"lr": config.lr, "weight_decay": config.weight_decay, "betas": config.adam_betas}
    try:
        return torch.optim.AdamW(parameters, fused=True, **options)
    except RuntimeError:  # no fused kernel for this device or dtype
        return torch.optim.AdamW(parameters, **options)


def _scheduler(optimizer: Any, settings: LoopSettings) -> Any:
    from transformers import get_scheduler

    schedule, total = settings.train.lr_schedule, settings.steps.total_steps
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[schedule]
    warmup = math.ceil(settings.train.warmup_ratio * total)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total)


def _report_with_checkpoint(run: _Run, settings: LoopSettings, metrics: dict[str, float], rank: int) -> None:
    """Every rank reports. DDP: rank 0 alone attaches the full checkpoint (Train V2's rule). FSDP2:
    every rank attaches its DCP shards, which Ray Train merges into one checkpoint folder."""
    import ray.train
    from ray.train import Checkpoint

    state = {
        "step": int(metrics["step"]),
        "micro_batches": int(metrics["step"]) * settings.train.grad_accum,  # the data position
        "mode": settings.train.mode,
        "strategy": settings.train.strategy,
        "base_path": settings.base_path,
        "added_tokens": run.added,
        "loss": metrics["loss"],
    }
    if settings.train.strategy == "fsdp2":
        from l2ray.train.checkpoint import EXPORT_DIR, save_sharded
        from l2ray.train.export import export_sharded

        with tempfile.TemporaryDirectory() as folder:
            save_sharded(folder, run.model, run.optimizer, run.scheduler, state)
            if state["step"] == settings.steps.total_steps:  # the final model, for the registry
                export_sharded(Path(folder) / EXPORT_DIR, run.model, run.tokenizer)
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder))
        return
    if rank != 0:
        ray.train.report(metrics)
        return
    trainer_state = {"optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict()}
    with tempfile.TemporaryDirectory() as folder:
        unwrapped = run.model.module if hasattr(run.model, "module") else run.model
        save_checkpoint(folder, unwrapped.causal_lm, run.tokenizer, trainer_state, state)
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder))


def _rank_zero_writer(settings: LoopSettings, rank: int) -> StepMetricWriter | None:
    """The writer into the driver's MLflow run on rank 0; ``None`` elsewhere."""
    if rank != 0:
        return None
    tracker = Tracker(settings.tracking_uri)
    try:
        tracker.client.get_run(settings.run_id)
    except Exception as exc:  # MlflowException, or a driver error for an unreachable server
        import socket

        raise RuntimeError(
            f"rank 0 on {socket.gethostname()} cannot see MLflow run {settings.run_id} in "
            f"{settings.tracking_uri} ({type(exc).__name__}): a local store (sqlite/file) works only where "
            "every worker shares the driver's file system; point tracking.tracking_uri at an mlflow "
            "server (k8s/ deploys one)"
        ) from exc
    return StepMetricWriter(tracker, settings.run_id, settings.train.metrics_flush_s)


def _maybe_inject_failure(settings: LoopSettings, step: int, rank: int, world: int) -> None:
    """The test hook: the last rank raises the first time any attempt reaches ``fail_at_step``.

    A marker file in the run's storage remembers that it fired, so the restarted group passes. The
    worker first waits until Ray Train has committed every checkpoint reported so far: otherwise a
    fast failure can beat rank 0's checkpoint report to the controller, the group restarts from an
    older checkpoint, and where it resumes would depend on timing.
    """
    if settings.train.fail_at_step != step or rank != world - 1 or settings.fault_marker is None:
        return
    marker = Path(settings.fault_marker)
    if marker.exists():
        return
    import ray.train

    ray.train.get_all_reported_checkpoints(
        consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED, timeout_s=300
    )
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"worker {rank} failed on purpose at step {step}\n")
    raise InjectedFailure(f"train.fail_at_step={step}: worker {rank} fails once on purpose (fault injection)")
