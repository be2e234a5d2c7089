"""The decoding policies as transformers `LogitsProcessor`s (one small class per policy).

Each processor works on a batch where row ``i`` belongs to ``policies[i]`` (a `RequestPolicy`); the
shared `PolicyBatch` feeds every emitted token to its row's policy exactly once, however many
processors look at the same step. Order matters and is the one `default_processors` returns:

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
        k = max((p.config.top_k for p in self.batch.policies), default=1)
        top = scores.topk(min(k, scores.shape[-1]), dim=-1).indices.tolist()
        for row, policy in enumerate(self.batch.policies):
            if policy.budget_forced() is not None:
                continue  # budget forcing owns this position; no draw is spent
            forced = policy.tag_forced()
            if forced is not None:
                _one_hot(scores, row, forced)
                continue
            for token, bias in policy.tag_bias(top[row][: policy.config.top_k]).items():
                scores[row, token] += bias
        return scores


class BudgetForcingLogitsProcessor(LogitsProcessor):
    """s1 budget forcing: end thinking when the budget is spent; turn the first ``num_ignore``
    attempts to end it into ``ignore_str``. Place it after sampling: it reads the chosen token."""

    def __init__(self, batch: PolicyBatch) -> None:
        self.batch = batch

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.batch.sync(input_ids)
        chosen = scores.argmax(dim=-1).tolist()
        for row, policy in enumerate(self.batch.policies):
            forced = policy.budget_forced()
            if forced is None:
                forced = policy.replace(chosen[row])
            if forced != chosen[row]:
                _one_hot(scores, row, forced)
        return scores


class LogitBiasLogitsProcessor(LogitsProcessor):
    """OpenAI ``logit_bias``: a per-row additive bias by token id."""

    def __init__(self, biases: Sequence[dict[int, float]]) -> None:
        self.biases = list(biases)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, bias in enumerate(self.biases):
            for token, value in bias.items():
                scores[row, token] += value
        return scores


class SeededSamplingLogitsProcessor(LogitsProcessor):
    """Temperature / top-p sampling with one ``torch.Generator`` per row; returns one-hot rows.

    Rows with temperature 0 are left alone (greedy). Sampling here instead of in ``generate`` makes a
    request's output independent of the requests batched with it.
    """

    def __init__(self, temperatures: Sequence[float], top_ps: Sequence[float], seeds: Sequence[int]) -> None:
        self.temperatures = list(temperatures)
        self.top_ps = list(top_ps)
        self.generators: list[torch.Generator | None] = [None] * len(seeds)
        self.seeds = list(seeds)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, temperature in enumerate(self.temperatures):
            if temperature <= 0:
                continue
            if self.generators[row] is None:
                self.generators[row] = torch.Generator(device="cpu").manual_seed(self.seeds[row])
            probs = torch.softmax(scores[row].float() / temperature, dim=-1).cpu()
            probs = _top_p(probs, self.top_ps[row])
            token = int(torch.multinomial(probs, 1, generator=self.generators[row]))
            _one_hot(scores, row, token)
        return scores


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


def _one_hot(scores: torch.FloatTensor, row: int, token: int) -> None:
    scores[row] = -torch.inf
    scores[row, token] = 0.0


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    if top_p >= 1.0:
        return probs
    ordered, index = probs.sort(descending=True)
    keep = ordered.cumsum(0) - ordered < top_p  # always keeps the most likely token
    filtered = torch.zeros_like(probs)
    filtered[index[keep]] = ordered[keep]
    return filtered
