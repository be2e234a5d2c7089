"""Export an FSDP2 student as sharded bf16 safetensors, straight from the shards; no Ray import.

Rank ``r`` writes ``model-000{r+1}-of-000{N}.safetensors`` with a contiguous run of the weights
(balanced by bytes); every tensor is all-gathered one at a time (``full_tensor()``, a collective
all ranks join), cast to bf16, and kept only by the rank that writes it, so no rank ever holds the
full model, let alone in fp32. Rank 0 adds the index, the config and the tokenizer. The layout is
the one ``mlflow.transformers`` logs (``model/`` and ``components/tokenizer/``), so a model
version registered by reference to this folder resolves like a logged one. Ranks may write into
different local folders that Ray Train merges, or into one shared folder.

Example:
    >>> export_sharded(folder, model, tokenizer)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

WEIGHTS_DIR = "model"
TOKENIZER_DIR = "components/tokenizer"
INDEX_FILE = "model.safetensors.index.json"


def export_sharded(
    folder: str | Path, model: Any, tokenizer: Any, dtype: torch.dtype = torch.bfloat16
) -> None:
    """Write this rank's safetensors file into ``folder/model``; rank 0 adds index, config, tokenizer.

    ``model`` is the sharded `LossModel` (`l2ray.train.fsdp.shard`); every rank must call this.
    """
    from safetensors.torch import save_file

    causal_lm = model.causal_lm
    rank, world = dist.get_rank(), dist.get_world_size()
    names = _unique_weights(causal_lm)
    owner = _owners(names, world)
    files = [f"model-{r + 1:05d}-of-{world:05d}.safetensors" for r in range(world)]
    mine: dict[str, torch.Tensor] = {}
    for name, tensor in names.items():
        full = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
        if owner[name] == rank:
            mine[name] = full.detach().to(dtype=dtype, device="cpu").contiguous()
        del full
    weights = Path(folder) / WEIGHTS_DIR
    weights.mkdir(parents=True, exist_ok=True)
    save_file(mine, weights / files[rank], metadata={"format": "pt"})
    if rank == 0:
        total = sum(t.numel() for t in names.values()) * torch.finfo(dtype).bits // 8
        index = {"metadata": {"total_size": total}, "weight_map": {n: files[owner[n]] for n in names}}
        (weights / INDEX_FILE).write_text(json.dumps(index, indent=2))
        causal_lm.config.save_pretrained(weights)
        config_path = weights / "config.json"
        config = json.loads(config_path.read_text())
        config_path.write_text(json.dumps(config | {"dtype": str(dtype).removeprefix("torch.")}, indent=2))
        if getattr(causal_lm, "generation_config", None) is not None:
            causal_lm.generation_config.save_pretrained(weights)
        tokenizer.save_pretrained(Path(folder) / TOKENIZER_DIR)


def _unique_weights(causal_lm: Any) -> dict[str, Any]:
    """Persistent state by name, a tied weight once (under its first name; loading re-ties it)."""
    seen: set[int] = set()
    unique: dict[str, Any] = {}
    for name, tensor in causal_lm.state_dict(keep_vars=True).items():  # keep_vars: tied stay one object
        if id(tensor) not in seen:
            seen.add(id(tensor))
            unique[name] = tensor
    return unique


def _owners(names: dict[str, Any], world: int) -> dict[str, int]:
    """Rank that writes each tensor: contiguous runs of about equal bytes, in state-dict order."""
    sizes = [t.numel() * t.element_size() for t in names.values()]
    total, running, owners = sum(sizes), 0, {}
    for name, size in zip(names, sizes, strict=True):
        owners[name] = min(world - 1, running * world // max(total, 1))
        running += size
    return owners
