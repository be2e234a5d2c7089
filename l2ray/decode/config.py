"""Decoding intervention knobs (shared by serving and evaluation)."""

from __future__ import annotations

from pydantic import Field

from l2ray._schema import Section


class InterventionConfig(Section):
    """Language-tag logit control and budget forcing while the model thinks.

    When any language tag is among the top-``top_k`` logits, with probability ``alpha`` add ``+beta``
    to the tags of ``boost`` languages and ``-beta`` to those of ``suppress``; ``force`` allows only
    one language's tag; ``max_switches`` bans tags once spent. Budget forcing follows s1.
    """

    boost: list[str] = Field(default_factory=list)
    suppress: list[str] = Field(default_factory=list)
    alpha: float = Field(default=1.0, ge=0.0, le=1.0)
    beta: float = Field(default=5.0, ge=0.0)
    top_k: int = Field(default=20, ge=1)
    force: str | None = None
    max_switches: int | None = Field(default=None, ge=0)
    max_thinking_tokens: int | None = Field(default=None, ge=0)
    num_ignore: int = Field(default=0, ge=0)
    ignore_str: str = "Wait"
