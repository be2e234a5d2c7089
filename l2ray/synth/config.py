"""Recipe section for trace synthesis."""

from __future__ import annotations

from pydantic import Field

from l2ray._schema import Section
from l2ray.traces import TraceKind


class SynthConfig(Section):
    """How seeds become multilingual traces (whole-CoT annotation and code-switching)."""

    kinds: list[TraceKind] = Field(default_factory=lambda: ["original", "whole", "mixed"], min_length=1)
    mixed_per_seed: int = Field(default=1, ge=0, description="code-switched traces per seed")
    p_switch: float = Field(default=0.5, ge=0.0, le=1.0)
    language_weights: dict[str, float] | None = None
    min_language_share: float = Field(default=0.6, ge=0.0, le=1.0)
    actors: int = Field(default=2, ge=1)
    batch_size: int = Field(default=16, ge=1)
    prompt_version: str = "v1"
