"""Dated list prices (USD per million tokens) of the teacher models the recipes name, and what each
model ignores of the request.

Prices move: each entry says when it was read and where. A recipe overrides them per role with
``price_per_mtok_input`` / ``price_per_mtok_output``; a model missing here costs 0 and `price_of`
says so (``known=False``), so a plan or a summary never shows a made-up number.

Example:
    >>> price_of(TeacherConfig(model="gpt-4o")).input
    2.5
    >>> price_of(TeacherConfig(model="my-local-model")).known
    False
"""

from __future__ import annotations

from dataclasses import dataclass

from l2ray.recipe import TeacherConfig


@dataclass(frozen=True)
class ListPrice:
    """One model's price per million tokens (input without provider-side prompt caching)."""

    input: float
    output: float
    as_of: str
    source: str
    batch_discount: float = 0.0  # share off through the provider's batch API (OpenAI: 0.5)


PRICES: dict[str, ListPrice] = {
    "gpt-4o": ListPrice(2.50, 10.00, "2025-09", "https://openai.com/api/pricing", 0.5),
    "gpt-4o-mini": ListPrice(0.15, 0.60, "2025-09", "https://openai.com/api/pricing", 0.5),
    # deepseek-reasoner is an alias: R1 until 2025-08, then DeepSeek-V3.1/3.2 thinking mode.
    "deepseek-reasoner": ListPrice(
        0.56, 1.68, "2025-09-05", "https://api-docs.deepseek.com/quick_start/pricing"
    ),
    "deepseek-chat": ListPrice(0.56, 1.68, "2025-09-05", "https://api-docs.deepseek.com/quick_start/pricing"),
}

IGNORED_PARAMS: dict[str, tuple[str, ...]] = {
    # "Not supported: temperature, top_p, … setting them will not trigger an error but has no effect"
    # (DeepSeek reasoning-model guide).
    "deepseek-reasoner": ("temperature", "top_p"),
}


@dataclass(frozen=True)
class Price:
    """The price a role pays, and whether it is known (table or recipe) or defaulted to 0."""

    input: float
    output: float
    known: bool
    as_of: str = ""
    batch_discount: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> float:
        """USD for these tokens (through the batch API: less the provider's batch discount)."""
        full = (prompt_tokens * self.input + completion_tokens * self.output) / 1e6
        return full * (1.0 - self.batch_discount) if batch else full

    def per_mtok(self) -> dict[str, float | bool | str]:
        """USD per million tokens, as summaries and cost plans report it."""
        return {"input": self.input, "output": self.output, "known": self.known, "as_of": self.as_of}


def price_of(config: TeacherConfig) -> Price:
    """The recipe's prices where set, else the table's for ``config.model``, else 0 (unknown)."""
    listed = PRICES.get(config.model)
    given_in, given_out = config.price_per_mtok_input, config.price_per_mtok_output
    if given_in is not None or given_out is not None:
        return Price(given_in or 0.0, given_out or 0.0, known=True, as_of="recipe")
    if listed is None:
        return Price(0.0, 0.0, known=False)
    return Price(
        listed.input, listed.output, known=True, as_of=listed.as_of, batch_discount=listed.batch_discount
    )


def ignored_params(model: str) -> tuple[str, ...]:
    """Sampling parameters ``model`` accepts but does not apply (never claimed in provenance)."""
    return IGNORED_PARAMS.get(model, ())
