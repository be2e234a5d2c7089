"""Recipe section for trace synthesis."""

from __future__ import annotations

from pydantic import Field

from l2ray._schema import Section
from l2ray.traces import TraceKind


class SynthConfig(Section):
    """How seeds become multilingual traces (whole-CoT annotation and code-switching).

    Teacher calls run in an actor pool of ``actors`` actors (``actor_cpus`` CPUs and ``actor_gpus``
    GPUs each — GPUs for a local teacher, ``teacher.kind: vllm`` or ``transformers``; async inside,
    ``teacher.concurrency`` requests in flight per actor); assembly and verification run in a pool
    of ``verify_actors`` actors of ``verify_cpus`` CPUs. ``language_weights`` (optional) weighs the
    target languages a mixed trace switches into; a language left out of it is never drawn.
    """

    kinds: list[TraceKind] = Field(default_factory=lambda: ["original", "whole", "mixed"], min_length=1)
    mixed_per_seed: int = Field(default=1, ge=0, description="code-switched traces per seed")
    p_switch: float = Field(default=0.5, ge=0.0, le=1.0)
    language_weights: dict[str, float] | None = None
    min_language_share: float = Field(default=0.6, ge=0.0, le=1.0)
    actors: int = Field(default=2, ge=1)
    actor_cpus: float = Field(default=0.5, gt=0)
    actor_gpus: float = Field(
        default=0.0, ge=0, description="GPUs of each teacher actor (a local vllm/transformers teacher)"
    )
    verify_actors: int = Field(default=1, ge=1)
    verify_cpus: float = Field(default=0.25, gt=0)
    batch_size: int = Field(default=16, ge=1)
    prompt_version: str = "v1"
    preview_rows: int = Field(default=3, ge=0, description="traces of each kind in preview.jsonl")
    progress: bool = Field(default=True, description="rich progress display on the driver")
