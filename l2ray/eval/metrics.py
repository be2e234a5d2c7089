"""Per-sample scoring and per (benchmark, configuration) summaries. Pure Python, no Ray.

`score_sample` turns one generation into the row stored in ``samples.jsonl``: grade, thinking and
answer tokens (counted with the student's tokenizer), truncation and the language mix of the thinking
part. `summarise` aggregates those rows; everything in ``summary.json`` can be recounted from them.

Failed requests stay in the data: they count as wrong in accuracy and pass@k, are reported as
``failures``, and are left out of token, truncation and language statistics (they have no text).
``thinking_tokens_by_problem`` keeps each sample's thinking tokens (``None`` where it failed), so the
promotion gate can compare two models' tokens on the problems both answered.

Example:
    >>> pass_at_k(n=4, c=1, k=2)
    0.5
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from l2ray.decode.types import Completion
from l2ray.grading import grade_answer
from l2ray.text.langmix import measure_language_mix
from l2ray.thinking import split_thinking

Encode = Callable[[str], Sequence[int]]


def score_sample(row: dict[str, Any], generation: Completion, encode: Encode) -> dict[str, Any]:
    """The stored record of one sample: the request's fields plus response, grade, tokens, language mix.

    ``row`` needs ``benchmark, problem_id, sample, configuration, question, gold, answer_type``.
    """
    record = {key: row[key] for key in _ROW_KEYS}
    record.update(
        response=generation.text,
        error=generation.error,
        failed=generation.text is None,
        finish_reason=generation.finish_reason,
        engine_usage=generation.usage,
        latency_s=round(generation.latency_s, 4),
    )
    if generation.text is None:
        record.update(
            thinking_tokens=0,
            answer_tokens=0,
            truncated=False,
            closed_thinking=False,
            extracted=None,
            correct=False,
            grade_reason=f"request failed: {generation.error}",
            language_mix={},
            switches=0,
            tag_switches=0,
            dominant_language=None,
        )
        return record
    thinking, answer, closed = split_thinking(generation.text, opened=generation.starts_in_thinking)
    grade = grade_answer(
        generation.text, row["gold"], row["answer_type"], starts_in_thinking=generation.starts_in_thinking
    )
    mix = measure_language_mix(thinking)
    record.update(
        thinking_tokens=len(encode(thinking)) if thinking else 0,
        answer_tokens=len(encode(answer)) if answer else 0,
        truncated=generation.finish_reason == "length",
        closed_thinking=closed,
        extracted=grade.extracted,
        correct=grade.correct,
        grade_reason=grade.reason,
        language_mix=mix.char_share,
        switches=mix.switches,
        tag_switches=mix.tag_switches,
        dominant_language=mix.dominant,
    )
    return record


def summarise(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{benchmark: {configuration: metrics}}`` over the records (see the module docstring)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["benchmark"], record["configuration"])].append(record)
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (benchmark, configuration), rows in groups.items():  # first-seen order = the recipe's order
        out[benchmark][configuration] = group_metrics(rows)
    return dict(out)


def group_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Metrics of one benchmark × configuration."""
    per_problem: dict[str, list[bool]] = defaultdict(list)
    for row in rows:
        per_problem[row["problem_id"]].append(bool(row["correct"]))
    problem_means = [sum(v) / len(v) for v in per_problem.values()]
    n = min(len(v) for v in per_problem.values())
    answered = [r for r in rows if not r["failed"]]
    thinking = [r["thinking_tokens"] for r in answered]
    answer = [r["answer_tokens"] for r in answered]
    total_thinking = sum(thinking)
    metrics: dict[str, Any] = {
        "problems": len(per_problem),
        "samples": len(rows),
        "samples_per_problem": n,
        "failures": len(rows) - len(answered),
        "failure_rate": _rate(len(rows) - len(answered), len(rows)),
        "accuracy": _round(sum(bool(r["correct"]) for r in rows) / len(rows)),
        # Standard error over problems (samples of one problem are not independent).
        "accuracy_se": _round(_standard_error(problem_means)),
        "thinking_tokens": _centre(thinking),
        "answer_tokens": _centre(answer),
        "truncation_rate": _rate(sum(bool(r["truncated"]) for r in answered), len(answered)),
        "empty_answer_rate": _rate(sum(r["extracted"] is None for r in answered), len(answered)),
        "language_shares": _mean_shares([r["language_mix"] for r in answered]),
        "switches_per_1k_thinking_tokens": _per_1k(sum(r["switches"] for r in answered), total_thinking),
        "tag_switches_per_1k_thinking_tokens": _per_1k(
            sum(r["tag_switches"] for r in answered), total_thinking
        ),
    }
    if n > 1:
        metrics["pass_at_k"] = {
            str(k): _round(statistics.fmean(pass_at_k(len(v), sum(v), k) for v in per_problem.values()))
            for k in _ks(n)
        }
    # The engine's own counts (exact generated tokens) beside our re-tokenised ones, when it reports them.
    for key in ("completion_tokens", "thinking_tokens"):
        counts = [r["engine_usage"].get(key) for r in answered if r["engine_usage"]]
        if counts and all(isinstance(c, int) for c in counts):
            metrics[f"engine_{key}_mean"] = _round(statistics.fmean(counts))
    metrics["thinking_tokens_by_problem"] = thinking_by_problem(rows)  # last: the one long entry
    return metrics


def thinking_by_problem(rows: Sequence[dict[str, Any]]) -> dict[str, list[int | None]]:
    """``{problem_id: [thinking tokens of each sample, in sample order]}``; ``None`` for a failed sample.

    Means alone cannot be compared across models when their failures differ: a model whose longest
    generations time out looks cheaper. Per problem, the gate can leave out what either side lacks.
    """
    samples: dict[str, list[tuple[int, int | None]]] = defaultdict(list)
    for row in rows:
        tokens = None if row["failed"] else int(row["thinking_tokens"])
        samples[str(row["problem_id"])].append((int(row["sample"]), tokens))
    return {
        problem: [tokens for _, tokens in sorted(pairs, key=lambda pair: pair[0])]
        for problem, pairs in samples.items()
    }


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``c`` correct out of ``n`` samples (Chen et al., 2021)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


# ---------------------------------------------------------------------------------------------------

_ROW_KEYS = ("benchmark", "problem_id", "sample", "configuration", "question", "gold", "answer_type")


def _ks(n: int) -> list[int]:
    ks = [1]
    while ks[-1] * 2 <= n:
        ks.append(ks[-1] * 2)
    return ks if ks[-1] == n else [*ks, n]


def _standard_error(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    return statistics.stdev(values) / math.sqrt(len(values))


def _centre(values: Sequence[int]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "median": None}
    return {"mean": _round(statistics.fmean(values)), "median": _round(float(statistics.median(values)))}


def _mean_shares(mixes: Sequence[dict[str, float]]) -> dict[str, float]:
    classified = [m for m in mixes if m]
    if not classified:
        return {}
    totals: dict[str, float] = defaultdict(float)
    for mix in classified:
        for code, share in mix.items():
            totals[code] += share
    return {code: _round(v / len(classified)) for code, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def _rate(count: int, total: int) -> float | None:
    return _round(count / total) if total else None


def _per_1k(count: int, tokens: int) -> float | None:
    return _round(1000.0 * count / tokens) if tokens else None


def _round(value: float) -> float:
    return round(value, 6)


__all__ = ["group_metrics", "pass_at_k", "score_sample", "summarise", "thinking_by_problem"]
