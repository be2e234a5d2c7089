"""Recipe section for fine-tuning on Ray Train.

Example (YAML):

    train:
      mode: lora
      mix: {kinds: [original, mixed], languages: [en, zh], max_seeds: 6, ratios: {original: 1, mixed: 2}}
      lr: 2.0e-4
      max_steps: 200
      num_workers: 4
      use_gpu: true
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from l2ray._schema import Section
from l2ray.traces import TraceKind


class MixConfig(Section):
    """Which synthesized rows the student sees: kinds, languages, seeds and ratios.

    A row is kept when its kind is in ``kinds`` and every language it uses (question and fragments)
    is in ``languages``. ``max_seeds`` keeps the rows of that many seeds (chosen with the recipe's
    seed). ``ratios`` fixes the share of rows per kind: the largest mix with those shares that needs
    no row twice is taken. ``max_rows`` caps the total after that.
    """

    kinds: list[TraceKind] = Field(default_factory=lambda: ["original", "whole", "mixed"], min_length=1)
    languages: list[str] | None = Field(default=None, description="default: the recipe's languages + en")
    max_seeds: int | None = Field(default=None, ge=1)
    ratios: dict[str, float] | None = Field(default=None, description="share of rows per kind")
    max_rows: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _ratios_name_selected_kinds(self) -> MixConfig:
        if self.ratios is not None:
            unknown = sorted(set(self.ratios) - set(self.kinds))
            if unknown:
                raise ValueError(
                    f"mix.ratios names kinds {unknown} that mix.kinds {self.kinds} does not select"
                )
            unshared = sorted(set(self.kinds) - set(self.ratios))
            if unshared:  # a selected kind without a share would silently get none
                raise ValueError(
                    f"mix.ratios gives no share to kinds {unshared} that mix.kinds selects: "
                    "add them to mix.ratios or drop them from mix.kinds"
                )
            if any(share <= 0 for share in self.ratios.values()):
                raise ValueError(f"mix.ratios must be positive, got {self.ratios}")
        return self


class LoraConfig(Section):
    """LoRA adapters (peft). When tags had to be added to the tokenizer, the embedding and output
    layers are trained and saved in full as well (the new rows must be learned)."""

    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


class TrainConfig(Section):
    """Optimisation, scaling and fault tolerance of one training run.

    Steps are optimizer steps: each takes ``batch_size × grad_accum`` traces per worker. Without
    ``max_steps`` a run takes ``epochs`` passes over each worker's share of the mix.

    ``fsdp`` shards the student with PyTorch FSDP across GPU workers (``prepare_model(...,
    parallel_strategy="fsdp")``, one FSDP unit per decoder layer): needed when the student does not
    fit in one GPU with its optimizer state (the paper's 32B student on 8 GPUs). Checkpoints gather
    the full weights on rank 0; on resume the optimizer moments restart (weights, schedule and step
    do not). Every worker first loads the whole student into host memory in float32 (4 bytes per
    parameter: 128 GB for 32B), the optimizer's master precision; bf16 is autocast on the GPU.
    """

    mode: Literal["full", "lora"] = "full"
    mix: MixConfig = Field(default_factory=MixConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    lr: float = Field(default=1e-5, gt=0.0)
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = Field(default=0.0, ge=0.0)
    warmup_ratio: float = Field(default=0.05, ge=0.0, le=1.0)
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    epochs: int = Field(default=3, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=1, ge=1, description="per worker")
    grad_accum: int = Field(default=1, ge=1)
    max_seq_len: int = Field(default=4096, ge=16)
    num_workers: int = Field(default=2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=0.5, gt=0.0)
    gpus_per_worker: float = Field(default=1.0, ge=0.0)
    bf16: Literal["auto", "on", "off"] = Field(default="auto", description="auto: on when use_gpu")
    fsdp: bool = False
    checkpoint_every: int = Field(default=10, ge=1)
    metrics_flush_s: float = Field(
        default=10.0,
        ge=0.0,
        description="seconds between rank 0's MLflow writes (every step is kept); 0: write each step",
    )
    keep_checkpoints: int = Field(default=2, ge=1)
    max_failures: int = Field(default=1, ge=0)
    fail_at_step: int | None = Field(
        default=None,
        ge=1,
        description=(
            "test hook: the last worker raises once when it reaches this step, after the checkpoints "
            "reported before it are committed (fault injection)"
        ),
    )

    @model_validator(mode="after")
    def _fsdp_needs_gpus(self) -> TrainConfig:
        if self.fsdp and not self.use_gpu:
            raise ValueError("train.fsdp shards the model over GPUs: set train.use_gpu: true or fsdp: false")
        return self
