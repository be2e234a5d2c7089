"""The decoding policies as transformers `LogitsProcessor`s (one small class per policy).

Each processor works on a batch where row ``i`` belongs to ``policies[i]`` (a `RequestPolicy`); the
shared `PolicyBatch` feeds every emitted token to its row's policy exactly once, however many
processors look at the same step. As transformers' own processors do, each returns a new tensor and
never edits the ``scores`` it is given: the per-row decisions are the policies' (Python), the edit is
one vectorised bias or one-hot over the batch (`l2ray.decode.batch`, the core the vLLM adapter
shares). Order matters and is the one `default_processors` returns:

    LanguageTag → LogitBias → SeededSampling → BudgetForcing

`SeededSamplingLogitsProcessor` samples with a per-row ``torch.Generator`` and returns a one-hot
row, so a request is reproducible whatever else shares its batch; `BudgetForcingLogitsProcessor`
comes last because s1's "ignore" acts on the token that was actually chosen. With plain greedy
``model.generate(..., logits_processor=[LanguageTag..., BudgetForcing...])`` works as well.

Example:
    >>> batch = PolicyBatch([RequestPolicy(InterventionConfig(force="zh"), vocab)])  # doctest: +SKIP
    >>> model.generate(**enc, logits_processor=[LanguageTagLogitsProcessor(batch)])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from l2ray.decode.batch import add_biases, budget_edits, force_tokens, tag_edits
from l2ray.decode.policy import RequestPolicy


class PolicyBatch:
    """The policies of a batch, kept in step with the tokens generated so far."""

    def __init__(self, policies: Sequence[RequestPolicy]) -> None:
        self.policies = list(policies)
        self._seen: int | None = None

    def sync(self, input_ids: torch.LongTensor) -> None:
        """Feed each row's tokens generated since the last call to its policy (idempotent per step)."""
        length = input_ids.shape[1]
        if self._seen is None:
            self._seen = length  # the first call sees only the prompts
            return
        if length <= self._seen:
            return
        fresh = input_ids[:, self._seen :].tolist()
        for policy, tokens in zip(self.policies, fresh, strict=True):
            for token in tokens:
                policy.observe(token)
        self._seen = length


class LanguageTagLogitsProcessor(LogitsProcessor):
    """Boost/suppress language tags at switch points, ban tags under ``force``/``max_switches``,
    and open the thinking with the forced language's tag."""

    def __init__(self, batch: PolicyBatch) -> None:
        self.batch = batch

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.batch.sync(input_ids)
        return tag_edits(self.batch.policies, scores)


class BudgetForcingLogitsProcessor(LogitsProcessor):
    """s1 budget forcing: end thinking when the budget is spent; turn the first ``num_ignore``
    attempts to end it into ``ignore_str``. Place it after sampling: it reads the chosen token."""

    def __init__(self, batch: PolicyBatch) -> None:
        self.batch = batch

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.batch.sync(input_ids)
        return budget_edits(self.batch.policies, scores.argmax(dim=-1).tolist(), scores)


class LogitBiasLogitsProcessor(LogitsProcessor):
    """OpenAI ``logit_bias``: a per-row additive bias by token id."""

    def __init__(self, biases: Sequence[dict[int, float]]) -> None:
        self.biases = list(biases)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return add_biases(scores, self.biases)


class SeededSamplingLogitsProcessor(LogitsProcessor):
    """Temperature / top-p sampling with one ``torch.Generator`` per row; returns one-hot rows.

    Rows with temperature 0 are left alone (greedy). Sampling here instead of in ``generate`` makes a
    request's output independent of the requests batched with it: each row draws from its own
    generator, which is why the draw itself is per row.
    """

    def __init__(self, temperatures: Sequence[float], top_ps: Sequence[float], seeds: Sequence[int]) -> None:
        if not len(temperatures) == len(top_ps) == len(seeds):
            raise ValueError(
                f"one temperature, top_p and seed per row: got {len(temperatures)}, {len(top_ps)}, "
                f"{len(seeds)}"
            )
        if any(t < 0 for t in temperatures) or any(not 0 < p <= 1 for p in top_ps):
            raise ValueError("temperatures must be >= 0 and top_p in (0, 1]")
        self.temperatures = list(temperatures)
        self.top_ps = list(top_ps)
        self.generators: list[torch.Generator | None] = [None] * len(seeds)
        self.seeds = list(seeds)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        drawn: list[int | None] = []
        for row, temperature in enumerate(self.temperatures):
            if temperature <= 0:
                drawn.append(None)
                continue
            if self.generators[row] is None:
                self.generators[row] = torch.Generator(device="cpu").manual_seed(self.seeds[row])
            probs = torch.softmax(scores[row].float() / temperature, dim=-1).cpu()
            probs = _top_p(probs, self.top_ps[row])
            drawn.append(int(torch.multinomial(probs, 1, generator=self.generators[row])))
        return force_tokens(scores, drawn)


def default_processors(
    batch: PolicyBatch,
    temperatures: Sequence[float],
    top_ps: Sequence[float],
    seeds: Sequence[int],
    logit_biases: Sequence[dict[int, float]] | None = None,
) -> LogitsProcessorList:
    """The processors of a batch, in the order that keeps both executions of a policy identical."""
    processors = [LanguageTagLogitsProcessor(batch)]
    if logit_biases and any(logit_biases):
        processors.append(LogitBiasLogitsProcessor(logit_biases))
    processors.append(SeededSamplingLogitsProcessor(temperatures, top_ps, seeds))
    processors.append(BudgetForcingLogitsProcessor(batch))
    return LogitsProcessorList(processors)


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    if top_p >= 1.0:
        return probs
    ordered, index = probs.sort(descending=True)
    keep = ordered.cumsum(0) - ordered < top_p  # always keeps the most likely token
    filtered = torch.zeros_like(probs)
    filtered[index[keep]] = ordered[keep]
    return filtered
