"""The memory plan of a training run: bytes per GPU and per host, and whether they fit.

No Ray import, no weights: the plan reads the student's shape (its ``config.json``, or for the
Qwen2.5 family offline the shapes below) and the recipe's ``train`` section. ``l2ray train plan``
prints it; ``l2ray train`` refuses a plan that does not fit before a worker starts, naming the knob
that would make it fit.

What is counted, per GPU (``P`` parameters, ``N`` workers, ``T`` tokens per micro-batch):

- FSDP2: fp32 master shards ``4P/N``, their fp32 gradients ``4P/N``, Adam's two moments ``8P/N``;
  in compute, the root unit (embeddings, head) and two decoder layers (current + prefetched)
  gathered in bf16, and one layer's unsharded bf16 gradient with its fp32 reduce copy.
- DDP: the whole model's fp32 weights, gradients and moments on every GPU, plus bf16 autocast copies.
- Activations per token and decoder layer (bf16, sdpa/flash attention, fp32 RMSNorm inputs):
  ``16H + 4·KV + 8I`` bytes without checkpointing; with it, each layer keeps its ``2H``-byte
  input and one layer at a time is recomputed.
- Loss: ``loss_chunk_tokens × V × 10`` bytes (bf16 logits, fp32 copy, fp32 gradient) of one chunk.
- Workspace: 2 GiB (CUDA context, NCCL buffers) plus 10 % of the rest (allocator fragmentation).

These are estimates, checked against measured per-rank tensor bytes and RSS on CPU (see
docs/training.md); GPU-measured peaks are not part of the checks yet.

Example:
    >>> plan = memory_plan(shape_of("Qwen/Qwen2.5-32B-Instruct"), TrainConfig(strategy="fsdp2"))
    >>> plan.fits  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from l2ray.errors import L2rayError
from l2ray.recipe import TrainConfig

GIB = 1024**3
_WORKSPACE_FIXED = 2 * GIB
_FRAGMENTATION = 0.10
_WORKER_RUNTIME = 4 * GIB  # one worker process on the host: Python, torch, CUDA runtime, data


class TrainPlanError(L2rayError):
    """The recipe's run cannot fit its GPUs or hosts, or the student's shape is unknown."""


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder-only transformer (Qwen2 / Llama layout: GQA attention, SwiGLU MLP)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool
    qkv_bias: bool = True
    source: str = "l2ray's Qwen2.5 table"
    """Where the shape was read (a config.json, or l2ray's table of Qwen2.5 sizes)."""

    @property
    def kv_width(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    def layer_params(self) -> int:
        h, kv, i = self.hidden, self.kv_width, self.intermediate
        attention = 2 * h * h + 2 * h * kv + ((h + 2 * kv) if self.qkv_bias else 0)
        return attention + 3 * h * i + 2 * h

    def root_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    def params(self) -> int:
        return self.layers * self.layer_params() + self.root_params()


# Qwen2.5 shapes from their config.json, so paper recipes plan offline (vocab: embedding rows).
QWEN25_SHAPES = {
    "0.5B": ModelShape(896, 24, 14, 2, 4864, 151936, tied=True),
    "1.5B": ModelShape(1536, 28, 12, 2, 8960, 151936, tied=True),
    "3B": ModelShape(2048, 36, 16, 2, 11008, 151936, tied=True),
    "7B": ModelShape(3584, 28, 28, 4, 18944, 152064, tied=False),
    "14B": ModelShape(5120, 48, 40, 8, 13824, 152064, tied=False),
    "32B": ModelShape(5120, 64, 40, 8, 27648, 152064, tied=False),
}


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per GPU (``gpu``) and on the busiest host (``host``); ``fits`` against the recipe."""

    gpu: dict[str, int]
    host: dict[str, int]
    gpu_limit: int
    host_limit: int
    activations_without_checkpointing: int
    activations_with_checkpointing: int
    shape_source: str = "l2ray's Qwen2.5 table"
    """Where the student's shape came from (`ModelShape.source`)."""

    @property
    def gpu_total(self) -> int:
        return sum(self.gpu.values())

    @property
    def host_total(self) -> int:
        return sum(self.host.values())

    @property
    def fits(self) -> bool:
        return self.gpu_total <= self.gpu_limit and self.host_total <= self.host_limit


def memory_plan(shape: ModelShape, config: TrainConfig) -> MemoryPlan:
    """The plan of ``config`` (its ``train`` section) for a student of ``shape``."""
    workers = config.num_workers
    params = shape.params()
    trainable = params if config.mode == "full" else _lora_params(shape, config)
    sharded = config.strategy == "fsdp2"
    share = workers if sharded else 1
    tokens = config.batch_size * config.max_seq_len
    gpu = {
        "parameters": math.ceil(4 * params / share),
        "gradients": math.ceil(4 * trainable / share),
        "optimizer": math.ceil(8 * trainable / share),
        "compute copies": _compute_copies(shape, sharded),
    }
    with_checkpointing = tokens * shape.layers * 2 * shape.hidden + tokens * _layer_activation_bytes(shape)
    without = tokens * shape.layers * _layer_activation_bytes(shape)
    gpu["activations"] = with_checkpointing if config.activation_checkpointing else without
    gpu["logits/loss"] = min(config.loss_chunk_tokens, tokens) * shape.vocab * 10 + tokens * shape.hidden * 6
    gpu["workspace"] = _WORKSPACE_FIXED + math.ceil(_FRAGMENTATION * sum(gpu.values()))
    per_node = min(config.gpus_per_node, workers)
    host = {
        # FSDP2: rank 0 alone reads one copy in the stored dtype (bf16); DDP: every worker one fp32 copy.
        "loading copy": 2 * params if sharded else 4 * params * per_node,
        "worker runtimes": _WORKER_RUNTIME * per_node,
        "export staging": math.ceil(2 * params / workers) * per_node if sharded else 2 * params,
    }
    return MemoryPlan(
        gpu=gpu,
        host=host,
        gpu_limit=int(config.gpu_memory_gib * GIB),
        host_limit=int(config.host_memory_gib * GIB),
        activations_without_checkpointing=without,
        activations_with_checkpointing=with_checkpointing,
        shape_source=shape.source,
    )


def refuse_unless_fits(shape: ModelShape, config: TrainConfig) -> MemoryPlan:
    """The plan; raises `TrainPlanError` naming the knobs that would make it fit when it does not."""
    plan = memory_plan(shape, config)
    if plan.fits:
        return plan
    where = "GPU" if plan.gpu_total > plan.gpu_limit else "host"
    need, limit = (plan.gpu_total, plan.gpu_limit) if where == "GPU" else (plan.host_total, plan.host_limit)
    fixes = _fixes(shape, config)
    raise TrainPlanError(
        f"train plan does not fit: {need / GIB:.1f} GiB per {where} > {limit / GIB:.1f} GiB "
        f"(see `l2ray train plan`); {fixes}"
    )


def shape_of(model: str) -> ModelShape:
    """The shape of a student: its ``config.json`` (a folder, a cached HF id, or the hub when it can be
    reached: `l2ray.hub`), else l2ray's table of Qwen2.5 sizes — a shape whose ``source`` says so."""
    from transformers import AutoConfig

    from l2ray.hub import use_cache_only

    try:
        config = AutoConfig.from_pretrained(model, local_files_only=use_cache_only())
    except OSError:
        size = next((s for s in QWEN25_SHAPES if f"Qwen2.5-{s}".lower() in Path(model).name.lower()), None)
        if size is None:
            raise TrainPlanError(
                f"student.model {model!r}: no config.json found offline and not a known Qwen2.5 size; "
                "download the model (its config.json suffices) or point student.model at a folder"
            ) from None
        source = f"l2ray's Qwen2.5-{size} table (no config.json of {model} reachable from here)"
        return dataclasses.replace(QWEN25_SHAPES[size], source=source)
    return ModelShape(
        hidden=config.hidden_size,
        layers=config.num_hidden_layers,
        heads=config.num_attention_heads,
        kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
        intermediate=config.intermediate_size,
        vocab=config.vocab_size,
        tied=bool(getattr(config, "tie_word_embeddings", False)),
        qkv_bias=bool(getattr(config, "attention_bias", config.model_type == "qwen2")),
        source=f"{model}'s config.json",
    )


def plan_rows(plan: MemoryPlan) -> list[tuple[str, str, str]]:
    """``(where, item, GiB)`` rows for a table, totals and limits included."""
    rows = [("GPU", name, f"{value / GIB:.2f}") for name, value in plan.gpu.items()]
    rows.append(("GPU", "total / limit", f"{plan.gpu_total / GIB:.2f} / {plan.gpu_limit / GIB:.0f}"))
    rows.append(
        ("GPU", "activations without checkpointing", f"{plan.activations_without_checkpointing / GIB:.2f}")
    )
    rows.append(("GPU", "activations with checkpointing", f"{plan.activations_with_checkpointing / GIB:.2f}"))
    rows += [("host", name, f"{value / GIB:.2f}") for name, value in plan.host.items()]
    rows.append(("host", "total / limit", f"{plan.host_total / GIB:.2f} / {plan.host_limit / GIB:.0f}"))
    return rows


def _compute_copies(shape: ModelShape, sharded: bool) -> int:
    """Unsharded bf16 weights in compute: under FSDP2 the root unit, two gathered layers and one
    layer's bf16 gradient with its fp32 reduce copy; under DDP, autocast's bf16 copy of everything."""
    if not sharded:
        return 2 * shape.params()
    layer = shape.layer_params()
    return 2 * shape.root_params() + 2 * 2 * layer + (2 + 4) * layer


def _layer_activation_bytes(shape: ModelShape) -> int:
    """Bytes one token keeps for backward in one decoder layer (see the module docstring)."""
    return 16 * shape.hidden + 4 * shape.kv_width + 8 * shape.intermediate


def _lora_params(shape: ModelShape, config: TrainConfig) -> int:
    """LoRA adapters on the targeted projections, plus the embedding and head trained in full (new tags)."""
    h, kv, i = shape.hidden, shape.kv_width, shape.intermediate
    sizes = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h)}
    sizes |= {"gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    per_layer = sum(config.lora.r * sum(sizes[m]) for m in config.lora.target_modules if m in sizes)
    return shape.layers * per_layer + shape.root_params()


def _fixes(shape: ModelShape, config: TrainConfig) -> str:
    """The first single knob change after which the plan fits, else the first changes that fit together."""
    candidates: list[tuple[str, dict[str, object]]] = []
    if not config.activation_checkpointing:
        candidates.append(("train.activation_checkpointing: true", {"activation_checkpointing": True}))
    if config.strategy == "ddp" and config.mode == "full":
        candidates.append(("train.strategy: fsdp2", {"strategy": "fsdp2"}))
    if config.loss_chunk_tokens > 512:
        candidates.append(("train.loss_chunk_tokens: 512", {"loss_chunk_tokens": 512}))
    for workers in (2 * config.num_workers, 4 * config.num_workers):
        candidates.append((f"train.num_workers: {workers}", {"num_workers": workers}))
    if config.max_seq_len > 4096:
        candidates.append(
            (f"train.max_seq_len: {config.max_seq_len // 2}", {"max_seq_len": config.max_seq_len // 2})
        )
    for text, change in candidates:
        if memory_plan(shape, config.model_copy(update=change)).fits:
            return f"set {text}"
    combined, texts = config, []
    for text, change in candidates:
        combined = combined.model_copy(update=change)
        texts.append(text)
        if memory_plan(shape, combined).fits:
            return "set " + " and ".join(texts)
    return "no train.* setting makes it fit: use a smaller student or GPUs with more memory"
