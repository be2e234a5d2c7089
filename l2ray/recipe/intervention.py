"""Recipe section for the decoding intervention: language-tag control and budget forcing (serving,
evaluation and the lab's sweeps)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from l2ray._schema import Section
from l2ray.languages import validate_codes

MAX_THINKING_TOKENS = 1_000_000
"""Upper bound on a thinking budget: anything larger is a mistake, not a budget."""


class InterventionConfig(Section):
    """Language-tag logit control and budget forcing while the model thinks.

    When any language tag is among the top-``top_k`` logits (a switch point) the tags of ``boost``
    and ``suppress`` languages are biased. The paper's ``alpha`` reads two ways, so ``alpha_mode``
    names the reading: ``probability`` (l2ray's default) adds ``+beta`` to boost tags and ``-beta``
    to suppress tags with probability ``alpha`` (a seeded draw per switch point); ``sign`` reads
    ``alpha`` in [-1, 1] as a signed strength and adds ``alpha * beta`` to boost tags and
    ``-alpha * beta`` to suppress tags at every switch point, with no draw. Which tags a switch
    point biases also reads two ways (``top_k_rule``): ``any_tag`` (l2ray's default) biases every
    boost/suppress tag once any tag is in the top-``top_k``; ``each_tag`` biases only the boost/suppress
    tags that are themselves among the top-``top_k``. ``force`` allows only
    one language's tag (and opens the thinking with it); ``max_switches`` bans tags of other languages
    once that many switches happened. Budget forcing follows s1: ``max_thinking_tokens`` ends the
    thinking when spent; ``num_ignore`` times an attempt to end it is replaced by ``ignore_str``.

    Example:
        >>> InterventionConfig(boost=["zh"], beta=4.0).active
        True
        >>> InterventionConfig().active
        False
        >>> InterventionConfig(boost=["zh"], alpha=-0.5, alpha_mode="sign").alpha
        -0.5
    """

    boost: list[str] = Field(default_factory=list)
    suppress: list[str] = Field(default_factory=list)
    alpha: float = Field(default=1.0, ge=-1.0, le=1.0)
    alpha_mode: Literal["probability", "sign"] = "probability"
    # <= 100 so the same bias travels as an OpenAI `logit_bias` to HTTP-only generators.
    beta: float = Field(default=5.0, ge=0.0, le=100.0)
    top_k: int = Field(default=20, ge=1, le=20)
    top_k_rule: Literal["any_tag", "each_tag"] = "any_tag"
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
        if self.alpha_mode == "probability" and self.alpha < 0:
            raise ValueError(
                f"alpha={self.alpha} is a probability under alpha_mode 'probability' and must be in [0, 1]; "
                "a negative alpha (a signed strength) needs alpha_mode: sign"
            )
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
