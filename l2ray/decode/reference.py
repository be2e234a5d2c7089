"""The intervention one row at a time: `RequestPolicy`'s decisions turned into edits of a logits batch.

This is the readable reference the tensor core (`l2ray.decode.core.PolicyCore`) must equal
(tests/decode/test_core.py drives both with the same logits and tokens) and the per-row baseline
`bench/intervention_step.py` measures it against — l2ray's engines ran it until the core replaced
it: a Python call per row per step and a host sync for the top-``k`` ids and the argmax.

- `tag_edits` — before sampling: the forced opening tag, the boost/suppress bias at switch points,
  the bans under ``force``/``max_switches``;
- `budget_edits` — on the chosen token: the end of thinking on a spent budget, the rest of
  ``ignore_str``, and s1's ignore (a chosen end of thinking becomes ``ignore_str``);
- `vllm_step` — both as vLLM's processors must apply them (before sampling, on the most likely
  token, then banning an end of thinking that would be ignored).

Example:
    >>> from l2ray.recipe import InterventionConfig
    >>> from l2ray.decode.spec import ReasoningVocab
    >>> vocab = ReasoningVocab(tag_ids={"en": 1, "zh": 2}, think_end_id=3, stop_ids=(0,))
    >>> tag_edits([RequestPolicy(InterventionConfig(force="zh"), vocab)], torch.zeros(1, 4)).argmax().item()
    2
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from l2ray.decode.policy import RequestPolicy


def tag_edits(policies: Sequence[RequestPolicy], scores: torch.Tensor) -> torch.Tensor:
    """``scores`` (row ``i`` is ``policies[i]``'s) with language-tag control applied, as a new tensor.

    A position budget forcing owns (it forces a token there) gets no tag edit and spends no draw.
    """
    k = max((p.config.top_k for p in policies), default=1)
    top = scores.topk(min(k, scores.shape[-1]), dim=-1).indices.tolist()
    biases: list[dict[int, float]] = []
    forced: list[int | None] = []
    for row, policy in enumerate(policies):
        owned = policy.budget_forced() is not None
        forced.append(None if owned else policy.tag_forced())
        wants_bias = not owned and forced[-1] is None
        biases.append(policy.tag_bias(top[row][: policy.config.top_k]) if wants_bias else {})
    return force_tokens(add_biases(scores, biases), forced)


def budget_edits(
    policies: Sequence[RequestPolicy], chosen: Sequence[int], scores: torch.Tensor
) -> torch.Tensor:
    """``scores`` with budget forcing applied given each row's ``chosen`` token, as a new tensor.

    A row whose position budget forcing owns, or whose chosen end of thinking s1's ignore replaces,
    becomes one-hot on the token it must be.
    """
    forced: list[int | None] = []
    for row, policy in enumerate(policies):
        token = policy.budget_forced()
        if token is None:
            token = policy.replace(chosen[row])
            token = token if token != chosen[row] else None
        forced.append(token)
    return force_tokens(scores, forced)


def vllm_step(policies: Sequence[RequestPolicy], scores: torch.Tensor) -> torch.Tensor:
    """One vLLM step: tag edits, budget forcing on the most likely token, then an end of thinking that
    would be ignored banned (vLLM samples after its processors and cannot replace a sampled token)."""
    edited = tag_edits(policies, scores)
    edited = budget_edits(policies, edited.argmax(dim=-1).tolist(), edited)
    bans = [
        {p.vocab.think_end_id: float("-inf")} if p.ignores_end() and p.vocab.think_end_id is not None else {}
        for p in policies
    ]
    return add_biases(edited, bans)


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


__all__ = ["add_biases", "budget_edits", "force_tokens", "tag_edits", "vllm_step"]
