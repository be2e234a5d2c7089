"""FSDP2 for students that do not fit one device: shard per decoder layer, bf16 compute, fp32 masters.

No Ray import; the caller has initialised ``torch.distributed``. Loading never holds more than one
full copy per job: every rank builds the student on the meta device, shards it, allocates only its
own shards, and rank 0 alone reads the weights and broadcasts them into everyone's shards.

Example:
    >>> model, tokenizer, added = build_sharded(base_path, device, ShardSettings())  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from l2ray.recipe import TrainConfig
from l2ray.student.tokens import ensure_reasoning_tokens
from l2ray.train.loss import LossModel


@dataclass(frozen=True)
class ShardSettings:
    """How the student is sharded and computed.

    Attributes:
        bf16: all-gather and compute in bf16, reduce gradients in fp32 (the master weights, their
            gradients and Adam's moments stay fp32 shards).
        activation_checkpointing: keep only each decoder layer's input and recompute the layer
            in backward.
        chunk_tokens: target positions per chunk of the loss (see `l2ray.train.loss`).
    """

    bf16: bool = True
    activation_checkpointing: bool = True
    chunk_tokens: int = 2048

    @classmethod
    def of(cls, config: TrainConfig) -> ShardSettings:
        """The sharding a training section asks for."""
        return cls(config.uses_bf16, config.activation_checkpointing, config.loss_chunk_tokens)


def build_sharded(
    base_path: str, device: torch.device, settings: ShardSettings, load_weights: bool = True
) -> tuple[LossModel, Any, list[str]]:
    """The sharded `LossModel` over the student at ``base_path``, its tokenizer and the added tokens.

    The student grows by the reasoning tokens it lacks exactly as the unsharded path grows it
    (`ensure_reasoning_tokens`), on every rank: the structure is decided by the tokenizer, the
    values by rank 0's copy. Without ``load_weights`` the shards stay uninitialised, for a
    checkpoint to fill (resuming never reads the base weights).
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_path)
    config = AutoConfig.from_pretrained(base_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    added = ensure_reasoning_tokens(tokenizer, model)
    wrapped = shard(model, settings)
    wrapped.to_empty(device=device)
    if load_weights:
        full_state: dict[str, Any] = {}
        if dist.get_rank() == 0:
            full_state = _rank_zero_weights(base_path, AutoTokenizer.from_pretrained(base_path))
        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        set_model_state_dict(model, full_state, options=options)
        del full_state
    reset_buffers(model, device)
    model.train()
    return wrapped, tokenizer, added


def build_sharded_random(
    config: Any, device: torch.device, settings: ShardSettings, seed: int = 0
) -> LossModel:
    """A randomly initialised sharded `LossModel` of ``config``'s shape: `build_sharded`'s meta init and
    sharding, each rank initialising its own shards the way transformers initialises the model — for
    throughput and memory checks, where shapes matter and weights do not (``bench/gpu_check.py``)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    wrapped = shard(model, settings)
    wrapped.to_empty(device=device)
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            model._init_weights(module)
    reset_buffers(model, device)
    model.train()
    return wrapped


def shard(model: Any, settings: ShardSettings) -> LossModel:
    """Wrap ``model`` in `LossModel` and apply ``fully_shard`` to each decoder layer, then the root.

    The root unit holds what no layer owns (embeddings, final norm, head): tied embedding and head
    weights must share one unit, or the tie breaks into two differently sharded copies.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if settings.activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if settings.bf16
        else MixedPrecisionPolicy()
    )
    for layer in decoder_layers(model):
        fully_shard(layer, mp_policy=policy)
    wrapped = LossModel(model, settings.chunk_tokens)
    fully_shard(wrapped, mp_policy=policy)
    return wrapped


def decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The modules transformers keeps whole (``_no_split_modules``): one FSDP unit each."""
    names = {name for m in model.modules() for name in (getattr(m, "_no_split_modules", None) or [])}
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"{type(model).__name__} names no decoder layer class (_no_split_modules)")
    return layers


def reset_buffers(model: Any, device: torch.device) -> None:
    """Recompute non-persistent buffers (rotary ``inv_freq``): no state dict carries them, and
    ``to_empty`` left them uninitialised. A fresh module built from the same config holds them."""
    for module in model.modules():
        names = getattr(module, "_non_persistent_buffers_set", set())
        if names and hasattr(module, "config"):
            fresh = type(module)(module.config)
            for name in names:
                setattr(module, name, getattr(fresh, name).to(device))


def _rank_zero_weights(base_path: str, tokenizer: Any) -> dict[str, Any]:
    """Rank 0's one host copy of the student's weights (in their stored dtype), grown as on every rank."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_path, dtype="auto")
    ensure_reasoning_tokens(tokenizer, model)
    return model.state_dict()
