"""One optimizer step over micro-batches, the same for DDP and FSDP2; no Ray import.

Every micro-batch's summed loss is divided by the number of target tokens of the whole step over
all ranks (all-reduced before the first backward), times the world size, since DDP and FSDP
average gradients over ranks. The update is then the gradient of the mean loss per target token of
everything the step saw: ``grad_accum=2 × batch 1`` equals ``batch 2``, and a rank with short traces
weighs no more per token than one with long traces. No ``no_sync``: FSDP2 reduce-scatters each
micro-batch's gradients into the fp32 shards (deferring would keep unsharded gradients).

Example:
    >>> totals = optimizer_step(model, optimizer, batches, max_grad_norm=1.0)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from l2ray.train.examples import IGNORE_INDEX


@dataclass(frozen=True)
class StepTotals:
    """What one step saw on this rank (``targets`` is over all ranks), and its loss over all ranks."""

    loss: float
    targets: int
    tokens: int
    computed_tokens: int


def optimizer_step(
    model: Any,
    optimizer: Any,
    batches: list[dict[str, torch.Tensor]],
    max_grad_norm: float,
    autocast_bf16: bool = False,
) -> StepTotals:
    """Forward and backward every micro-batch of ``batches``, clip, step, zero the gradients.

    ``model`` is a `LossModel` (possibly DDP- or FSDP-wrapped). A batch holds ``input_ids`` and
    ``labels`` and either ``attention_mask`` (padded) or ``position_ids`` and ``real_tokens``
    (packed, `l2ray.train.packing`). ``tokens`` counts real tokens, ``computed_tokens`` every
    position the model computed (padding included).
    """
    device = batches[0]["input_ids"].device
    local_targets = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
    global_targets = all_reduce_sum([local_targets], device)[0]
    world = dist.get_world_size() if dist.is_initialized() else 1
    scale = world / max(global_targets, 1.0)
    loss_total, tokens, computed = 0.0, 0, 0
    for batch in batches:
        autocast = (
            torch.autocast(device.type, dtype=torch.bfloat16) if autocast_bf16 else contextlib.nullcontext()
        )
        inputs = {name: tensor for name, tensor in batch.items() if name != "real_tokens"}
        with autocast:
            loss_sum, _ = model(**inputs)
        (loss_sum * scale).backward()
        loss_total += float(loss_sum.detach())
        mask = batch.get("attention_mask")
        tokens += int(mask.sum()) if mask is not None else int(batch["real_tokens"])
        computed += batch["input_ids"].numel()
    parameters = [p for p in model.parameters() if p.requires_grad]
    torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)  # DTensor-aware: the norm spans all shards
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    loss = all_reduce_sum([loss_total], device)[0] / max(global_targets, 1.0)
    return StepTotals(loss=loss, targets=int(global_targets), tokens=tokens, computed_tokens=computed)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sums over all ranks (identity without a process group)."""
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()
