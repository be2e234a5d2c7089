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

    ``strategy`` says how workers share the student. ``ddp``: every worker holds the whole model
    (fp32 weights, bf16 autocast on GPU), right for students that fit one device with their
    optimizer state. ``fsdp2``: PyTorch FSDP2 (``fully_shard`` per decoder layer, then the root)
    with bf16 compute and fp32 reduction over fp32 master shards; the student is built on the meta
    device and filled from rank 0's one host copy; checkpoints are sharded (torch DCP: weights,
    Adam moments, schedule and data position, one file per rank) and the final model is exported
    as bf16 safetensors from the shards. ``l2ray train plan`` prints the memory this needs per
    GPU and host; ``l2ray train`` refuses a plan that does not fit ``gpu_memory_gib``.
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
    strategy: Literal["ddp", "fsdp2"] = "ddp"
    activation_checkpointing: bool = Field(
        default=False, description="recompute each decoder layer in backward (keeps its input only)"
    )
    loss_chunk_tokens: int = Field(default=2048, ge=1, description="target positions per loss chunk")
    packing: bool = Field(
        default=False, description="several traces per row up to max_seq_len, attention kept within each"
    )
    adam_betas: tuple[float, float] = (0.9, 0.999)
    storage_path: str | None = Field(
        default=None,
        description="Ray Train storage for checkpoints (a shared path or pyarrow URI such as s3://…); "
        "default <run_dir>/train/ray, which only a single-node cluster shares",
    )
    gpu_memory_gib: float = Field(default=80.0, gt=0.0, description="memory of one GPU, for the plan")
    gpus_per_node: int = Field(default=8, ge=1, description="workers per host, for the plan")
    host_memory_gib: float = Field(default=1024.0, gt=0.0, description="memory of one host, for the plan")
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

    @property
    def uses_bf16(self) -> bool:
        """Whether the run computes in bf16 (``bf16: auto`` means on GPUs only)."""
        return self.bf16 == "on" or (self.bf16 == "auto" and self.use_gpu)

    @model_validator(mode="after")
    def _fsdp2_trains_in_full(self) -> TrainConfig:
        if self.strategy == "fsdp2" and self.mode != "full":
            raise ValueError(
                "train.strategy fsdp2 shards full fine-tuning only: set train.mode: full, or "
                "strategy: ddp for LoRA"
            )
        return self
