"""The intervention as transformers `LogitsProcessor`s (one small class per policy) over `PolicyCore`.

A `PolicyBatch` holds the batch's requests in a `PolicyCore` (row ``i`` is slot ``i``) and feeds it
every emitted token exactly once, however many processors look at the same step; each processor is
a fixed number of tensor operations over the batch (no Python per row, no host sync) and, as
transformers' own processors do, returns a new tensor and never edits the ``scores`` it is given.
Order matters and is the one `default_processors` returns:

    LanguageTag → LogitBias → SeededSampling → BudgetForcing

`SeededSamplingLogitsProcessor` samples with a per-row ``torch.Generator`` and returns a one-hot
row, so a request is reproducible whatever else shares its batch; `BudgetForcingLogitsProcessor`
comes last because s1's "ignore" acts on the token that was actually chosen. With plain greedy
``model.generate(..., logits_processor=[LanguageTag..., BudgetForcing...])`` works as well.

Example:
    >>> batch = PolicyBatch([codec.spec(request)], codec.vocab)  # doctest: +SKIP
    >>> model.generate(**enc, logits_processor=[LanguageTagLogitsProcessor(batch)])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from l2ray.decode.core import PolicyCore, Rows, one_hot_rows
from l2ray.decode.spec import PolicySpec, ReasoningVocab


class PolicyBatch:
    """The requests of a static batch in a `PolicyCore`, kept in step with the tokens generated so far.

    Args:
        specs: one checked `PolicySpec` per row.
        vocab: the model's reasoning vocabulary.
        device: the logits' device.
    """

    def __init__(
        self, specs: Sequence[PolicySpec], vocab: ReasoningVocab, device: torch.device | str = "cpu"
    ) -> None:
        self.core = PolicyCore(vocab, len(specs), device)
        for slot, spec in enumerate(specs):
            self.core.admit(slot, spec)
        self.size = len(specs)
        self.needs = self.core.needs(slice(0, self.size))
        self._seen: int | None = None
        self._rows: Rows | None = None

    def sync(self, input_ids: torch.LongTensor) -> None:
        """Feed each row's tokens generated since the last call to the core (idempotent per step)."""
        length = input_ids.shape[1]
        if self._seen is None:
            self._seen = length  # the first call sees only the prompts
            return
        if length <= self._seen:
            return
        rows = self.core.rows(self.size)
        for column in range(self._seen, length):
            self.core.observe(rows, input_ids[:, column], needs=self.needs)
        self._seen, self._rows = length, None

    def step_rows(self) -> Rows:
        """This step's rows, the acting ones and those budget forcing owns marked (once per step, for
        every processor that looks at it)."""
        if self._rows is None:
            self._rows = self.core.rows(self.size)
            self.core.begin(self._rows, self.needs)
        return self._rows

    def counters(self, rows: list[int]) -> list[dict[str, Any]]:
        """The usage counters of ``rows`` (read when they finish)."""
        return self.core.counters(rows)


class LanguageTagLogitsProcessor(LogitsProcessor):
    """Boost/suppress language tags at switch points, ban tags under ``force``/``max_switches``,
    and open the thinking with the forced language's tag."""

    def __init__(self, batch: PolicyBatch) -> None:
        self.batch = batch

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.batch.sync(input_ids)
        if not self.batch.needs.tags:
            return scores
        core = self.batch.core
        edit = core.tag_pass(self.batch.step_rows(), scores, self.batch.needs)
        return scores if edit is None else core.write(scores, edit)


class BudgetForcingLogitsProcessor(LogitsProcessor):
    """s1 budget forcing: end thinking when the budget is spent; turn the first ``num_ignore``
    attempts to end it into ``ignore_str``. Place it after sampling: it reads the chosen token."""

    def __init__(self, batch: PolicyBatch) -> None:
        self.batch = batch

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.batch.sync(input_ids)
        if not self.batch.needs.budget:
            return scores
        # The chosen token matters only to s1's ignore: no argmax when no row has ignores.
        chosen = scores.argmax(dim=-1) if self.batch.needs.ignore else None
        token, forced = self.batch.core.budget_pass(self.batch.step_rows(), chosen)
        return self.batch.core.write(scores, None, token, forced)


class LogitBiasLogitsProcessor(LogitsProcessor):
    """OpenAI ``logit_bias``: a per-row additive bias by token id, as one indexed add."""

    def __init__(self, biases: Sequence[dict[int, float]]) -> None:
        rows = [row for row, bias in enumerate(biases) for _ in bias]
        self.index = (
            torch.tensor(rows, dtype=torch.long),
            torch.tensor([t for b in biases for t in b], dtype=torch.long),
        )
        self.values = torch.tensor([v for b in biases for v in b.values()], dtype=torch.float32)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not len(self.values):
            return scores
        index = tuple(i.to(scores.device) for i in self.index)
        return scores.index_put(index, self.values.to(scores.device, scores.dtype), accumulate=True)


class SeededSamplingLogitsProcessor(LogitsProcessor):
    """Temperature / top-p sampling with one ``torch.Generator`` per row; returns one-hot rows.

    Rows with temperature 0 are left alone (greedy). Sampling here instead of in ``generate`` makes a
    request's output independent of the requests batched with it: each row draws from its own
    generator, which is why the draw itself is per row (and only sampled rows pay for it).
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
        self.sampled = [row for row, t in enumerate(self.temperatures) if t > 0]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.sampled:
            return scores
        drawn = [0] * len(self.temperatures)
        for row in self.sampled:
            if self.generators[row] is None:
                self.generators[row] = torch.Generator(device="cpu").manual_seed(self.seeds[row])
            probs = torch.softmax(scores[row].float() / self.temperatures[row], dim=-1).cpu()
            probs = _top_p(probs, self.top_ps[row])
            drawn[row] = int(torch.multinomial(probs, 1, generator=self.generators[row]))
        mask = torch.zeros(len(drawn), dtype=torch.bool)
        mask[self.sampled] = True
        return one_hot_rows(scores, torch.tensor(drawn, device=scores.device), mask.to(scores.device))


def default_processors(
    batch: PolicyBatch,
    temperatures: Sequence[float],
    top_ps: Sequence[float],
    seeds: Sequence[int],
    logit_biases: Sequence[dict[int, float]] | None = None,
) -> LogitsProcessorList:
    """The processors of a batch, in the order that keeps every execution of a policy identical."""
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
