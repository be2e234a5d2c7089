"""The decoding policies as transformers `LogitsProcessor`s (one small class per policy).

Each processor works on a batch where row ``i`` belongs to ``policies[i]`` (a `RequestPolicy`); the
shared `PolicyBatch` feeds every emitted token to its row's policy exactly once, however many
processors look at the same step. As transformers' own processors do, each returns a new tensor and
never edits the ``scores`` it is given: the per-row decisions are the policies' (Python), the edit is
one vectorised bias or one-hot over the batch. Order matters and is the one `default_processors` returns:

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
        biases: list[dict[int, float]] = []
        forced: list[int | None] = []
        for row, policy in enumerate(self.batch.policies):
            # Budget forcing owns a position it forces: no tag draw is spent there.
            owned = policy.budget_forced() is not None
            forced.append(None if owned else policy.tag_forced())
            wants_bias = not owned and forced[-1] is None
            biases.append(policy.tag_bias(top[row][: policy.config.top_k]) if wants_bias else {})
        return force_tokens(add_biases(scores, biases), forced)


class BudgetForcingLogitsProcessor(LogitsProcessor):
    """s1 budget forcing: end thinking when the budget is spent; turn the first ``num_ignore``
    attempts to end it into ``ignore_str``. Place it after sampling: it reads the chosen token."""

    def __init__(self, batch: PolicyBatch) -> None:
        self.batch = batch

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.batch.sync(input_ids)
        chosen = scores.argmax(dim=-1).tolist()
        forced: list[int | None] = []
        for row, policy in enumerate(self.batch.policies):
            token = policy.budget_forced()
            token = policy.replace(chosen[row]) if token is None else token
            forced.append(token if token != chosen[row] else None)
        return force_tokens(scores, forced)


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


def add_biases(scores: torch.Tensor, biases: Sequence[dict[int, float]]) -> torch.Tensor:
    """``scores`` plus a per-row additive bias (``-inf`` bans a token), as a new tensor.

    >>> add_biases(torch.zeros(2, 3), [{1: 2.0}, {}]).tolist()
    [[0.0, 2.0, 0.0], [0.0, 0.0, 0.0]]
    """
    rows = [row for row, bias in enumerate(biases) for _ in bias]
    if not rows:
        return scores
    cols = [token for bias in biases for token in bias]
    values = [value for bias in biases for value in bias.values()]
    delta = torch.zeros_like(scores)
    index = (torch.tensor(rows, device=scores.device), torch.tensor(cols, device=scores.device))
    delta.index_put_(index, torch.tensor(values, dtype=scores.dtype, device=scores.device), accumulate=True)
    return scores + delta


def force_tokens(scores: torch.Tensor, tokens: Sequence[int | None]) -> torch.Tensor:
    """Rows with a token become one-hot on it (0 there, ``-inf`` elsewhere); a new tensor when any do.

    >>> force_tokens(torch.zeros(2, 3), [2, None]).tolist()
    [[-inf, -inf, 0.0], [0.0, 0.0, 0.0]]
    """
    rows = [row for row, token in enumerate(tokens) if token is not None]
    if not rows:
        return scores
    device = scores.device
    forced = torch.full((len(rows), scores.shape[-1]), -torch.inf, dtype=scores.dtype, device=device)
    forced[torch.arange(len(rows), device=device), torch.tensor([tokens[r] for r in rows], device=device)] = (
        0.0
    )
    out = scores.clone()
    out[torch.tensor(rows, device=device)] = forced
    return out


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    if top_p >= 1.0:
        return probs
    ordered, index = probs.sort(descending=True)
    keep = ordered.cumsum(0) - ordered < top_p  # always keeps the most likely token
    filtered = torch.zeros_like(probs)
    filtered[index[keep]] = ordered[keep]
    return filtered
