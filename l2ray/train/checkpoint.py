"""Sharded, resumable checkpoints of an FSDP2 run with torch DCP; no Ray import.

A checkpoint folder holds one ``__<rank>_0.distcp`` file per rank (its shards of the fp32 weights
and of Adam's moments), DCP's ``.metadata``, and from rank 0 ``trainer_state.pt`` (the LR
schedule) and ``l2ray_state.json`` (global step, data position, what export needs); the final
one also holds ``export/`` (`l2ray.train.export`). Nothing is gathered: each rank writes and reads
only its shards, so a resumed run continues with the same moments. Ranks may write into different
local folders (Ray Train merges every rank's folder into one checkpoint in storage), or into one
shared folder.

Example:
    >>> save_sharded(folder, model, optimizer, scheduler, {"step": 10, ...})  # doctest: +SKIP
    >>> state = load_sharded(folder, model, optimizer, scheduler)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from l2ray.train.model import STATE_FILE, TRAINER_STATE, read_state

SHARDED_FORMAT = "dcp"
EXPORT_DIR = "export"  # the final checkpoint's bf16 safetensors (`l2ray.train.export`)


def save_sharded(
    folder: str | Path, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any]
) -> None:
    """Every rank writes its shards into ``folder``; rank 0 adds the schedule and ``state``.

    ``state`` must hold ``step``; ``format`` is set to ``dcp`` so readers can tell this layout
    from a full (DDP) checkpoint.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(folder))
    if dist.get_rank() == 0:
        torch.save({"scheduler": scheduler.state_dict()}, folder / TRAINER_STATE)
        (folder / STATE_FILE).write_text(json.dumps(state | {"format": SHARDED_FORMAT}, indent=2))


def load_sharded(folder: str | Path, model: Any, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Read this rank's shards of weights and moments, and the schedule; return the saved ``state``."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    loaded = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(loaded, checkpoint_id=str(folder))
    set_state_dict(model, optimizer, model_state_dict=loaded["model"], optim_state_dict=loaded["optimizer"])
    trainer_state = torch.load(Path(folder) / TRAINER_STATE, map_location="cpu", weights_only=False)
    scheduler.load_state_dict(trainer_state["scheduler"])
    return read_state(folder)


def is_sharded(state: dict[str, Any]) -> bool:
    """Whether a checkpoint's ``l2ray_state.json`` content says `save_sharded` wrote it."""
    return state.get("format") == SHARDED_FORMAT
