"""The Ray Train worker loop: every worker runs `train_loop_per_worker` with the same `LoopSettings`.

Each worker tokenizes its shard of the mix, trains for the number of optimizer steps the driver
computed (the same on every rank, so every rank calls ``ray.train.report`` equally often), and
rank 0 logs step metrics to MLflow and writes checkpoints. After a worker failure Ray Train
restarts the group; the loop then resumes from ``ray.train.get_checkpoint()`` and the global step
continues where the checkpoint left it.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from l2ray.train.config import LoraConfig
from l2ray.train.examples import (
    IGNORE_INDEX,
    Example,
    collate,
    encode_example,
    micro_batch,
    token_loss_sum,
)
from l2ray.train.mix import rank_share
from l2ray.train.model import load_for_training, read_state, read_trainer_state, save_checkpoint
from l2ray.train.tracking import StepMetricWriter, Tracker


class LoopSettings(BaseModel):
    """Everything a worker needs, computed on the driver (plain data: it travels to every worker)."""

    base_path: str
    mode: str
    lora: LoraConfig
    total_steps: int
    steps_per_epoch: int
    batch_size: int
    grad_accum: int
    max_seq_len: int
    lr: float
    lr_schedule: str
    weight_decay: float
    warmup_ratio: float
    max_grad_norm: float
    bf16: bool
    fsdp: bool
    checkpoint_every: int
    metrics_flush_s: float
    seed: int
    tracking_uri: str
    run_id: str
    fail_at_step: int | None = None
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
    restored = _restore(settings)
    examples = _worker_examples(settings, restored.tokenizer, rank, world)
    device = get_device()
    run = _prepare(settings, restored, device)
    writer = _rank_zero_writer(settings, rank)
    data_stats = _all_reduce(
        [sum(e.truncated for e in examples), sum(e.dropped_tokens for e in examples), len(examples)], device
    )
    if writer is not None:
        summary = {
            "truncated_examples": data_stats[0],
            "truncated_tokens": data_stats[1],
            "examples": data_stats[2],
        }
        resumed = {"resumed_from_step": restored.start_step} if restored.start_step else {}
        writer.add(summary | resumed, max(restored.start_step, 1))
    try:
        _train_steps(settings, run, examples, rank, world, device, data_stats, writer)
    finally:  # a failing step still leaves every finished step's metrics in the run
        if writer is not None:
            writer.flush()


@dataclass
class _Restored:
    """The student as a worker starts with it: from the base, or from the latest checkpoint."""

    model: Any
    tokenizer: Any
    added: list[str]
    start_step: int = 0
    trainer_state: dict[str, Any] | None = None


@dataclass
class _Run:
    """What the step loop works on: the wrapped model, its optimizer and schedule."""

    model: Any
    tokenizer: Any
    optimizer: Any
    scheduler: Any
    added: list[str]
    start_step: int


def _restore(settings: LoopSettings) -> _Restored:
    """Load the base student, or the latest checkpoint after a restart (``ray.train.get_checkpoint``)."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    with checkpoint.as_directory() if checkpoint else contextlib.nullcontext(None) as folder:
        model, tokenizer, added = load_for_training(settings.base_path, settings.mode, settings.lora, folder)
        restored = _Restored(model, tokenizer, added)
        if folder is not None:
            restored.start_step = read_state(folder)["step"]
            restored.trainer_state = read_trainer_state(folder)
    model.train()  # from_pretrained returns eval mode, which would switch LoRA dropout off
    return restored


def _worker_examples(settings: LoopSettings, tokenizer: Any, rank: int, world: int) -> list[Example]:
    """This worker's fixed share of the mix, tokenized."""
    import ray.train

    records = rank_share(list(ray.train.get_dataset_shard("train").iter_rows()), rank, world)
    examples = [
        encode_example(tokenizer, r["question"], r["assistant"], settings.max_seq_len) for r in records
    ]
    if not examples:
        raise RuntimeError(f"worker {rank} received no rows; use fewer workers than mix rows")
    return examples


def _prepare(settings: LoopSettings, restored: _Restored, device: Any) -> _Run:
    """Wrap the model for data parallelism (DDP, or FSDP across GPUs); build optimizer and schedule."""
    from ray.train.torch import prepare_model

    model = restored.model
    if settings.fsdp:
        # The model stays on the host: FSDP moves one decoder layer at a time to ``device_id`` and
        # shards it there, where `prepare_model`'s default would first move the whole model to one GPU.
        options = _fsdp_options(model) | {"device_id": device}
        model = prepare_model(
            model, move_to_device=False, parallel_strategy="fsdp", parallel_strategy_kwargs=options
        )
    else:
        model = prepare_model(model)
    optimizer = _optimizer([p for p in model.parameters() if p.requires_grad], settings)
    scheduler = _scheduler(optimizer, settings)
    if restored.trainer_state is not None:
        _restore_trainer_state(restored.trainer_state, optimizer, scheduler)
    return _Run(model, restored.tokenizer, optimizer, scheduler, restored.added, restored.start_step)


def _train_steps(
    settings: LoopSettings,
    run: _Run,
    examples: list[Example],
    rank: int,
    world: int,
    device: Any,
    data_stats: list[float],
    writer: StepMetricWriter | None,
) -> None:
    """Every optimizer step from the restored one on: step, all-reduce, log, checkpoint."""
    import torch

    tokenizer = run.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # Throughput spans one step's end to the next, so logging and checkpointing count against it.
    last = time.perf_counter()
    for step in range(run.start_step + 1, settings.total_steps + 1):
        _maybe_inject_failure(settings, step, rank, world)
        # Dropout draws from a seed fixed by (seed, rank, step): a resumed run repeats them exactly.
        torch.manual_seed(settings.seed * 1_000_003 + rank * 100_003 + step)
        lr = run.optimizer.param_groups[0]["lr"]  # the rate this step used, before the schedule moves
        totals = _optimizer_step(run.model, run.optimizer, examples, step, rank, settings, device, pad_id)
        run.scheduler.step()
        loss_sum, targets, tokens = _all_reduce(list(totals), device)
        now = time.perf_counter()
        elapsed, last = now - last, now
        metrics = {
            "step": step,
            "epoch": step / settings.steps_per_epoch,
            "loss": loss_sum / max(targets, 1),
            "lr": lr,
            "tokens": tokens,
            "step_seconds": elapsed,
            "tokens_per_s": tokens / elapsed,
            "target_tokens": targets,
            "truncated_examples": data_stats[0],
            "truncated_tokens": data_stats[1],
        }
        if writer is not None:
            writer.add({k: v for k, v in metrics.items() if k != "step"}, step)
        if step % settings.checkpoint_every == 0 or step == settings.total_steps:
            if writer is not None:  # a checkpointed step's metrics are durable before it is
                writer.flush()
            _report_with_checkpoint(run, settings, metrics, rank)


def _optimizer_step(
    model: Any,
    optimizer: Any,
    examples: list[Example],
    step: int,
    rank: int,
    settings: LoopSettings,
    device: Any,
    pad_id: int,
) -> tuple[float, int, int]:
    """One optimizer step over ``grad_accum`` micro-batches; returns (loss sum, target tokens, tokens)."""
    import torch

    first = (step - 1) * settings.grad_accum
    batches = [
        collate(micro_batch(examples, first + k, settings.batch_size, settings.seed, rank), pad_id)
        for k in range(settings.grad_accum)
    ]
    # Normalise by the target tokens of the whole window, known before the first backward.
    window_targets = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
    loss_total, tokens = 0.0, 0
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if settings.bf16
        else contextlib.nullcontext()
    )
    for k, batch in enumerate(batches):
        batch = {name: tensor.to(device) for name, tensor in batch.items()}
        # DDP all-reduces gradients on every backward; skip that until the window's last micro-batch.
        last = k == len(batches) - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast:
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss_sum = token_loss_sum(logits, batch["labels"])
            (loss_sum / max(window_targets, 1)).backward()
        loss_total += float(loss_sum.detach())
        tokens += int(batch["attention_mask"].sum())
    if hasattr(model, "clip_grad_norm_"):  # FSDP: the norm must be computed over all shards
        model.clip_grad_norm_(settings.max_grad_norm)
    else:
        torch.nn.utils.clip_grad_norm_(
            [p for p in model.parameters() if p.requires_grad], settings.max_grad_norm
        )
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_total, window_targets, tokens


def _optimizer(parameters: list[Any], settings: LoopSettings) -> Any:
    """AdamW, with the fused kernel where the device has one (HF ``Trainer``'s default as well)."""
    import torch

    options = {"lr": settings.lr, "weight_decay": settings.weight_decay}
    try:
        return torch.optim.AdamW(parameters, fused=True, **options)
    except RuntimeError:  # no fused kernel for this device or dtype
        return torch.optim.AdamW(parameters, **options)


def _scheduler(optimizer: Any, settings: LoopSettings) -> Any:
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[settings.lr_schedule]
    warmup = math.ceil(settings.warmup_ratio * settings.total_steps)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=settings.total_steps)


def _report_with_checkpoint(run: _Run, settings: LoopSettings, metrics: dict[str, float], rank: int) -> None:
    """Every rank reports; rank 0 alone attaches the checkpoint (Train V2's rule)."""
    import ray.train
    from ray.train import Checkpoint

    model, optimizer, scheduler = run.model, run.optimizer, run.scheduler
    full_state = _gathered_state_dict(model) if settings.fsdp else None
    if rank != 0:
        ray.train.report(metrics)
        return
    unwrapped = model.module if hasattr(model, "module") else model
    trainer_state = {
        # Under FSDP the optimizer holds shards; the moments restart on resume (weights, schedule and
        # step do not), since gathering them needs the full model on every rank.
        "optimizer": None if settings.fsdp else optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
    }
    state = {
        "step": int(metrics["step"]),
        "mode": settings.mode,
        "base_path": settings.base_path,
        "added_tokens": run.added,
        "loss": metrics["loss"],
    }
    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(folder, unwrapped, run.tokenizer, trainer_state, state, state_dict=full_state)
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder))


def _fsdp_options(model: Any) -> dict[str, Any]:
    """Shard per decoder layer (the model's ``_no_split_modules``), not as one flat unit whose
    all-gather would need the whole model on every GPU; ``use_orig_params`` allows frozen (LoRA)
    and trainable parameters side by side."""
    import functools

    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    names = {name for m in model.modules() for name in (getattr(m, "_no_split_modules", None) or [])}
    layers = {type(m) for m in model.modules() if type(m).__name__ in names}
    options: dict[str, Any] = {"use_orig_params": True}
    if layers:
        options["auto_wrap_policy"] = functools.partial(
            transformer_auto_wrap_policy, transformer_layer_cls=layers
        )
    return options


def _gathered_state_dict(model: Any) -> dict[str, Any] | None:
    """The full state dict of an FSDP model on rank 0 (every rank must call this)."""
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    config = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, config):
        return model.state_dict()


def _restore_trainer_state(trainer_state: dict[str, Any], optimizer: Any, scheduler: Any) -> None:
    if trainer_state["optimizer"] is not None:  # None under FSDP (see `_report_with_checkpoint`)
        optimizer.load_state_dict(trainer_state["optimizer"])
    scheduler.load_state_dict(trainer_state["scheduler"])


def _all_reduce(values: list[float], device: Any) -> list[float]:
    """Sums over all workers (identity with one worker)."""
    import torch
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


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
    return StepMetricWriter(tracker, settings.run_id, settings.metrics_flush_s)


def _maybe_inject_failure(settings: LoopSettings, step: int, rank: int, world: int) -> None:
    """The test hook: the last rank raises the first time any attempt reaches ``fail_at_step``.

    A marker file in the run's storage remembers that it fired, so the restarted group passes. The
    worker first waits until Ray Train has committed every checkpoint reported so far: otherwise a
    fast failure can beat rank 0's checkpoint report to the controller, the group restarts from an
    older checkpoint, and where it resumes would depend on timing.
    """
    if settings.fail_at_step != step or rank != world - 1 or settings.fault_marker is None:
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
