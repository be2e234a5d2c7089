"""Decoding intervention knobs (shared by serving and evaluation)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from l2ray._schema import Section
from l2ray.languages import validate_codes

MAX_THINKING_TOKENS = 1_000_000
"""Upper bound on a thinking budget: anything larger is a mistake, not a budget."""


class InterventionConfig(Section):
    """Language-tag logit control and budget forcing while the model thinks.

    When any language tag is among the top-``top_k`` logits, with probability ``alpha`` add ``+beta``
    to the tags of ``boost`` languages and ``-beta`` to those of ``suppress``; ``force`` allows only
    one language's tag (and opens the thinking with it); ``max_switches`` bans tags of other languages
    once that many switches happened. Budget forcing follows s1: ``max_thinking_tokens`` ends the
    thinking when spent; ``num_ignore`` times an attempt to end it is replaced by ``ignore_str``.

    Example:
        >>> InterventionConfig(boost=["zh"], beta=4.0).active
        True
        >>> InterventionConfig().active
        False
    """

    boost: list[str] = Field(default_factory=list)
    suppress: list[str] = Field(default_factory=list)
    alpha: float = Field(default=1.0, ge=0.0, le=1.0)
    # <= 100 so the same bias travels as an OpenAI `logit_bias` to HTTP-only generators.
    beta: float = Field(default=5.0, ge=0.0, le=100.0)
    top_k: int = Field(default=20, ge=1, le=20)
    force: str | None = None
    max_switches: int | None = Field(default=None, ge=0)
    max_thinking_tokens: int | None = Field(default=None, ge=0, le=MAX_THINKING_TOKENS)
    num_ignore: int = Field(default=0, ge=0, le=64)
    ignore_str: str = Field(default="Wait", min_length=1, max_length=200)

    @field_validator("boost", "suppress")
    @classmethod
    def _known_codes(cls, codes: list[str]) -> list[str]:
        return validate_codes(codes)

    @field_validator("force")
    @classmethod
    def _known_force(cls, code: str | None) -> str | None:
        if code is not None:
            validate_codes([code])
        return code

    @model_validator(mode="after")
    def _consistent(self) -> InterventionConfig:
        both = sorted(set(self.boost) & set(self.suppress))
        if both:
            raise ValueError(f"languages {both} are in both boost and suppress; keep each in one list")
        if self.force is not None and self.force in self.suppress:
            raise ValueError(f"force={self.force!r} is also suppressed; drop it from suppress")
        return self

    @property
    def active(self) -> bool:
        """True when the configuration changes decoding at all."""
        return bool(
            self.boost
            or self.suppress
            or self.force
            or self.max_switches is not None
            or self.max_thinking_tokens is not None
            or self.num_ignore
        )
