"""Recipe section for evaluation and eval-gated promotion."""

from __future__ import annotations

from pydantic import Field

from l2ray._schema import Section
from l2ray.decode.config import InterventionConfig


class PromotionGate(Section):
    """A candidate replaces the champion when both hold."""

    max_accuracy_drop: float = Field(default=0.0, ge=0.0, le=1.0)
    min_thinking_token_reduction: float = Field(default=0.0, ge=0.0, le=1.0)


class EvalConfig(Section):
    """Benchmarks, samples and decoding configurations to compare."""

    benchmarks: list[str] = Field(default_factory=lambda: ["mini"], min_length=1)
    limit: int | None = Field(default=None, ge=1, description="problems per benchmark")
    samples: int = Field(default=1, ge=1, description="samples per problem (pass@k when > 1)")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(default=32768, ge=1)
    concurrency: int = Field(default=8, ge=1)
    endpoint: str | None = Field(default=None, description="OpenAI-compatible base URL; default in-process")
    configurations: dict[str, InterventionConfig] = Field(
        default_factory=lambda: {"off": InterventionConfig()}, min_length=1
    )
    gate: PromotionGate = Field(default_factory=PromotionGate)
