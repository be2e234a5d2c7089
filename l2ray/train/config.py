"""Recipe section for fine-tuning on Ray Train."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from l2ray._schema import Section
from l2ray.traces import TraceKind


class MixConfig(Section):
    """Which synthesized rows the student sees: kinds, languages, seeds and ratios."""

    kinds: list[TraceKind] = Field(default_factory=lambda: ["original", "whole", "mixed"], min_length=1)
    languages: list[str] | None = Field(default=None, description="default: the recipe's languages + en")
    max_seeds: int | None = Field(default=None, ge=1)
    ratios: dict[str, float] | None = Field(default=None, description="share of rows per kind")


class LoraConfig(Section):
    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


class TrainConfig(Section):
    """Optimisation, scaling and fault tolerance of one training run."""

    mode: Literal["full", "lora"] = "full"
    mix: MixConfig = Field(default_factory=MixConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    lr: float = Field(default=1e-5, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    warmup_ratio: float = Field(default=0.05, ge=0.0, le=1.0)
    epochs: int = Field(default=3, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=1, ge=1, description="per worker")
    grad_accum: int = Field(default=1, ge=1)
    max_seq_len: int = Field(default=4096, ge=16)
    num_workers: int = Field(default=2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=0.5, gt=0.0)
    gpus_per_worker: float = Field(default=1.0, ge=0.0)
    bf16: Literal["auto", "on", "off"] = "auto"
    fsdp: bool = False
    checkpoint_every: int = Field(default=10, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)
    max_failures: int = Field(default=1, ge=0)
