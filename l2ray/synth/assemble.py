r"""Assemble a trace from its task and the teacher's replies, and verify it (pure, no Ray).

`assemble` returns ``("accepted", TraceRow fields)`` or ``("rejected", rejected-row fields)``; a
rejected row keeps the candidate text and says why (``reason`` is a short code, ``detail`` a
sentence). Reasons: ``teacher:<code>``, ``cache_miss`` and ``internal:<type>`` (the request or our
code failed, or ``teacher:budget``: the role's ``max_cost_usd`` was reached; a rerun retries them),
``truncated`` (a reply stopped at ``max_tokens``),
``teacher_markup`` (the teacher wrote ``<think>``/``</think>`` or a language tag into text we keep),
``wrong_answer``, ``no_reasoning``, ``language_share``, ``question_language``, ``fragment_language``,
``fragment_math``, ``no_switch`` (a mixed plan that translated nothing), ``single_fragment``.

Example:
    >>> seed = SeedRow(id="s", source="t", question="1+1?", cot="So $1+1=2$.", answer="2")
    >>> task = SynthTask(id="t1", kind="original", languages=["en"], seed=seed)
    >>> status, row = assemble(task, {"responses": {}, "requests": [], "error": None}, 0.6)
    >>> status, row["cot"]
    ('accepted', '<|lang:en|>So $1+1=2$.')
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from l2ray.data.seeds import SeedRow
from l2ray.grading import grade_answer
from l2ray.languages import TAG_OPEN
from l2ray.synth.prompts import parse_solution, parse_translation, restore_whitespace
from l2ray.synth.task import SynthTask
from l2ray.text import detect_segment_language, insert_tags, math_segments, measure_language_mix, segment
from l2ray.thinking import THINK_END, THINK_START

REJECTED_COLUMNS = (
    "id",
    "seed_id",
    "kind",
    "languages",
    "reason",
    "detail",
    "question",
    "cot",
    "response",
    "teacher",
    "usage",
)
RETRYABLE_PREFIXES = ("teacher:", "cache_miss", "internal:")
"""Rejections caused by a failed request or a crash, not by the content: a rerun tries these again
(every reply that was paid for is in the response cache, so a retry re-sends only what failed)."""
MARKUP = (THINK_START, THINK_END, TAG_OPEN)
"""What only l2ray may write into a trace: the thinking delimiters and the language tags."""


def assemble(
    task: SynthTask, outcome: dict[str, Any], min_language_share: float
) -> tuple[str, dict[str, Any]]:
    """Build and check the trace of ``task`` from the worker's ``outcome``.

    Args:
        task: a task from `l2ray.synth.task_plan.expand_seed`.
        outcome: ``{"responses": {...}, "requests": [...], "error": None | {"reason", "detail"},
            "teacher": provenance}`` (provenance: per role the model asked for, the models that
            answered and the parameters applied; kept as the ``teacher`` column).
        min_language_share: the least character share of the target language in a whole trace.
    """
    try:
        return _assemble(task, outcome, min_language_share)
    except Exception as exc:  # an unforeseen reply or a bug costs this row, never the run
        base = {
            **_identity(task),
            "teacher": json.dumps(outcome.get("teacher") or {"roles": {}, "requests": []}),
            "usage": json.dumps(_usage(outcome.get("requests") or [])),
        }
        return "rejected", _rejected(base, f"internal:{type(exc).__name__}", str(exc)[:500])


def _identity(task: SynthTask) -> dict[str, Any]:
    """The columns every row of ``task``, accepted or rejected, starts with."""
    return {"id": task.id, "seed_id": task.seed_id, "kind": task.kind, "languages": list(task.languages)}


def _assemble(task: SynthTask, outcome: dict[str, Any], min_share: float) -> tuple[str, dict[str, Any]]:
    seed, langs = task.seed, task.languages
    provenance = outcome.get("teacher") or {
        "roles": {},
        "requests": [r["fingerprint"] for r in outcome["requests"]],
    }
    base = {
        **_identity(task),
        "teacher": json.dumps(provenance, ensure_ascii=False),
        "usage": json.dumps(_usage(outcome["requests"])),
    }
    if outcome.get("error"):
        error = outcome["error"]
        return "rejected", _rejected(base, error["reason"], error["detail"], seed.question, "", "")
    if task.kind == "original":
        return "accepted", _trace(base, seed.question, "en", insert_tags([("en", seed.cot)]), seed, {})
    if task.kind == "whole":
        return _whole(base, seed, langs[0], outcome["responses"], min_share)
    return _mixed(base, seed, langs, outcome["responses"])


def _whole(
    base: dict[str, Any], seed: SeedRow, lang: str, responses: dict[str, Any], min_share: float
) -> tuple[str, dict[str, Any]]:
    question = parse_translation(responses["question"])
    cot, response = parse_solution(responses["solution"])
    markup = _markup({"question": question, "reasoning": cot, "answer": response})
    if markup:
        return "rejected", _rejected(base, "teacher_markup", markup, question, cot, response)
    tagged = insert_tags([(lang, cot)]) if cot else ""
    if not cot:
        return "rejected", _rejected(base, "no_reasoning", "the reply has no chain of thought", question)
    grade = grade_answer(response, seed.answer)
    if grade.extracted is None:  # no answer after the reasoning: look inside it
        grade = grade_answer(cot, seed.answer)
    mix = measure_language_mix(cot)
    question_lang = measure_language_mix(question).dominant
    checks = {
        "answer": grade.to_dict(),
        "language_share": mix.share(lang),
        "dominant": mix.dominant,
        "question_language": question_lang,
    }
    problem = None
    if not grade.correct:
        problem = ("wrong_answer", f"extracted {grade.extracted!r}, gold {seed.answer!r} ({grade.reason})")
    elif mix.share(lang) < min_share:
        problem = (
            "language_share",
            f"{lang} is {mix.share(lang):.0%} of the reasoning (shares {mix.char_share}), "
            f"below synth.min_language_share={min_share}",
        )
    elif question_lang not in (None, lang):
        problem = ("question_language", f"the translated question reads as {question_lang}, not {lang}")
    if problem:
        return "rejected", _rejected(base, *problem, question, tagged, response, checks)
    final = response or f"$\\boxed{{{grade.extracted}}}$"  # the answer was only inside the reasoning
    return "accepted", _trace(base, question, lang, tagged, seed, checks, final)


def _mixed(
    base: dict[str, Any], seed: SeedRow, langs: list[str], responses: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    fragments = segment(seed.cot)
    if len(fragments) < 2:
        return "rejected", _rejected(base, "single_fragment", "the seed CoT has no reflection boundary")
    if all(code == "en" for code in langs):
        return "rejected", _rejected(base, "no_switch", "the seeded plan translated no fragment")
    pieces: list[tuple[str, str]] = []
    fragment_checks = []
    problem = None
    for index, (code, source) in enumerate(zip(langs, fragments, strict=True)):
        if code == "en":
            pieces.append((code, source))
            continue
        translation = parse_translation(responses["fragments"][str(index)])
        markup = _markup({f"fragment {index}": translation})
        if problem is None and markup:
            problem = ("teacher_markup", markup)
        detected = detect_segment_language(translation)
        lost = _lost_math(source, translation)
        fragment_checks.append({"index": index, "lang": code, "detected": detected, "math_ok": not lost})
        if problem is None and detected not in (None, code):
            problem = ("fragment_language", f"fragment {index} should be {code} but reads as {detected}")
        if problem is None and lost:
            problem = ("fragment_math", f"fragment {index} lost or changed math {lost[:3]}")
        pieces.append((code, restore_whitespace(source, translation)))
    tagged = insert_tags(pieces)
    checks = {"fragments": fragment_checks}
    if problem:
        return "rejected", _rejected(base, *problem, seed.question, tagged, seed.final_response(), checks)
    return "accepted", _trace(base, seed.question, "en", tagged, seed, checks)


def _markup(texts: dict[str, str]) -> str | None:
    """Which teacher text holds our markup (e.g. a reasoning reply cut off before ``</think>``)."""
    for name, text in texts.items():
        found = [m for m in MARKUP if m in text]
        if found:
            return f"the teacher's {name} contains {found}; only l2ray writes these"
    return None


def _lost_math(source: str, translation: str) -> list[str]:
    """Math spans of ``source`` missing from ``translation`` (order may change; content may not)."""
    have = Counter(_squash(s) for s in math_segments(translation))
    lost = []
    for span in math_segments(source):
        key = _squash(span)
        if have[key] > 0:
            have[key] -= 1
        else:
            lost.append(span)
    return lost


def _squash(text: str) -> str:
    return "".join(text.split())


def _trace(
    base: dict[str, Any],
    question: str,
    question_lang: str,
    cot: str,
    seed: SeedRow,
    checks: dict[str, Any],
    response: str | None = None,
) -> dict[str, Any]:
    return {
        **base,
        "question": question,
        "question_lang": question_lang,
        "cot": cot,
        "response": response or seed.final_response(),
        "answer": seed.answer,
        "checks": json.dumps(checks, ensure_ascii=False),
    }


def _rejected(
    base: dict[str, Any],
    reason: str,
    detail: str,
    question: str = "",
    cot: str = "",
    response: str = "",
    checks: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if checks:
        detail = f"{detail}; checks {json.dumps(checks, ensure_ascii=False)}"
    return {
        **base,
        "reason": reason,
        "detail": detail,
        "question": question,
        "cot": cot,
        "response": response,
    }


def _usage(requests: list[dict[str, Any]]) -> dict[str, Any]:
    """The row's token counts and the dollars it cost this run (paid requests only), in total and
    per role (``by_role``)."""
    by_role = {role: _counts([r for r in requests if r.get("role") == role]) for role in _roles(requests)}
    return {**_counts(requests), "by_role": by_role}


def _roles(requests: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["role"] for r in requests if r.get("role")))


def _counts(requests: list[dict[str, Any]]) -> dict[str, Any]:
    sent = [r for r in requests if not r["cached"]]
    return {
        "requests": len(requests),
        "cache_hits": len(requests) - len(sent),
        "prompt_tokens": sum(r["prompt_tokens"] for r in requests),
        "completion_tokens": sum(r["completion_tokens"] for r in requests),
        "sent_prompt_tokens": sum(r["prompt_tokens"] for r in sent),
        "sent_completion_tokens": sum(r["completion_tokens"] for r in sent),
        "cost_usd": sum(r.get("cost_usd", 0.0) for r in sent),
    }
