r"""Grade one model response against a gold answer: math (math-verify), integers, or letters.

Where the answer is looked for: after the last ``</think>`` when the response has one; nowhere when the
response opened thinking and never closed it (a ``<think>`` without ``</think>``, or ``starts_in_thinking``
when the generation prompt opened the block), since a ``\boxed{}`` inside cut-off reasoning is no answer;
else in the whole text (a model that does not think). Math and integer answers come from the last
complete ``\boxed{…}`` first, then from the text after the last answer anchor of any registered language
("the answer is", "答案是", "die Antwort ist", …; see `l2ray.languages.Language.answer_anchors`).
Integers are read strictly: commas only as thousands separators ("1,000"), and never digits joined across
spaces ("2 3" and "3, 5" are not 23 and 35). Letters (multiple choice) are extracted strictly: a boxed
letter, a letter right after an anchor, or a last line that is only a letter — never a letter guessed
from prose. No answer found means not correct, with the reason saying so.

Example:
    >>> grade_answer(r"<think>2+2</think> So \boxed{4}.", "4")
    Grade(extracted='4', correct=True, reason='boxed: equivalent')
    >>> grade_answer("Die Antwort ist 3/4.", r"\frac{3}{4}").correct
    True
    >>> grade_answer(r"答案是 \boxed{C}", "C", "letter")
    Grade(extracted='C', correct=True, reason='boxed letter: matches')

Pure Python (no Ray), below both stages that grade: synthesis verifies whole traces with it and
evaluation scores samples.
"""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass
from typing import Literal

from l2ray.languages import LANGUAGES
from l2ray.text.boxed import last_boxed
from l2ray.thinking import THINK_END, THINK_START

AnswerType = Literal["math", "integer", "letter"]
ANSWER_TYPES: tuple[AnswerType, ...] = ("math", "integer", "letter")

GRADER_VERSION = "l2ray-grader-3"
"""Part of every evaluation fingerprint: bump it whenever a change here can change a verdict."""

NEVER_CLOSED = "thinking never closed"
LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class Grade:
    """The verdict on one response.

    Attributes:
        extracted: the answer text that was graded (boxed content, text after an anchor, or a letter),
            ``None`` when none was found.
        correct: whether it matches the gold answer.
        reason: how it was found and why it was judged so, e.g. ``"boxed: equivalent"``.
    """

    extracted: str | None
    correct: bool
    reason: str

    def to_dict(self) -> dict[str, str | bool | None]:
        return asdict(self)


def grade_answer(
    response: str, gold: str, answer_type: AnswerType = "math", *, starts_in_thinking: bool = False
) -> Grade:
    r"""Grade ``response`` against ``gold``.

    Args:
        response: the model's text, with or without a ``<think>…</think>`` part.
        gold: the reference answer (LaTeX or plain for math, digits for integer, one letter for letter).
        answer_type: ``"math"`` (math-verify equivalence), ``"integer"`` (exact integer value, math-verify
            as fallback for forms like ``\frac{84}{2}``) or ``"letter"`` (strict choice letter).
        starts_in_thinking: the text began inside a ``<think>`` block that is not part of it (the chat
            template's generation prompt opened it, or a server returned the reasoning apart); without a
            ``</think>`` such a response has no answer.

    Raises:
        ValueError: an unknown ``answer_type``, or a gold answer that does not fit it (e.g. ``"AB"`` for
            a letter item) — that is a data problem, not a wrong response.
    """
    validate_gold(gold, answer_type)
    region = answer_region(response, starts_in_thinking)
    if region is None:
        return Grade(None, False, NEVER_CLOSED)
    if answer_type == "letter":
        return _grade_letter(region, gold)
    return _grade_math(region, gold, integer=answer_type == "integer")


def validate_gold(gold: str, answer_type: AnswerType) -> None:
    """Raise ``ValueError`` when ``gold`` does not fit ``answer_type`` (an empty answer, ``"AB"`` for a
    letter item, ``"1/2"`` for an integer item) — a data problem, reported before any grading."""
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"unknown answer_type {answer_type!r}; use one of {', '.join(ANSWER_TYPES)}")
    if not gold.strip():
        raise ValueError("gold answer is empty")
    if answer_type == "letter" and _bare_letter(gold.strip()) is None:
        raise ValueError(f"gold answer {gold!r} is not a single choice letter A-J; fix the dataset row")
    if answer_type == "integer" and _as_integer(gold) is None:
        raise ValueError(f"gold answer {gold!r} is not an integer; use answer_type 'math' for it")


def answer_region(response: str, starts_in_thinking: bool = False) -> str | None:
    """The part of a response that holds the final answer: after the last ``</think>``; ``None`` when
    thinking was opened (``<think>`` in the text, or ``starts_in_thinking``) and never closed — the
    output was cut off mid-reasoning; else all of it (a model that does not think)."""
    _, sep, tail = response.rpartition(THINK_END)
    if sep:
        return tail
    return None if starts_in_thinking or THINK_START in response else response


def extract_math_answer(region: str) -> tuple[str | None, str]:
    r"""``(candidate, how)``: the last complete ``\boxed{}`` content, else the text after the last anchor.

    ``how`` is ``"boxed"``, ``"anchor"``, or why nothing was found (``"no answer"``, ``"unclosed box"``).
    """
    boxed = last_boxed(region)
    if boxed is not None:
        return boxed, "boxed"
    anchored = _after_last_anchor(region)
    if anchored is None:
        return None, "unclosed box" if _has_unclosed_box(region) else "no answer"
    if _has_unclosed_box(anchored):
        # A box that never closed is a cut-off answer; crediting its first digits would be a guess.
        return None, "unclosed box"
    candidate = _SENTENCE_END.split(anchored.strip().split("\n", 1)[0], maxsplit=1)[0].strip(" :：$")
    return (candidate or None), "anchor" if candidate else "empty anchor"


def extract_letter(region: str) -> tuple[str | None, str]:
    """``(letter, how)`` with ``how`` in ``boxed letter``, ``anchor letter``, ``last line letter``."""
    boxed = last_boxed(region)
    if boxed is not None:
        letter = _bare_letter(boxed)
        return (letter, "boxed letter") if letter else (None, f"boxed content {boxed!r} is not a letter")
    anchored = _after_last_anchor(region)
    if anchored is not None:
        match = _LEADING_LETTER.match(anchored)
        if match:
            return match.group(1).upper(), "anchor letter"
    lines = [line for line in region.strip().splitlines() if line.strip()]
    if lines:
        letter = _bare_letter(lines[-1])
        if letter:
            return letter, "last line letter"
    return None, "no answer"


# ---------------------------------------------------------------------------------------------------

_ANCHORS = sorted(
    {a.lower() for lang in LANGUAGES.values() for a in lang.answer_anchors}, key=len, reverse=True
)
_ANCHOR_RE = re.compile("|".join(re.escape(a) for a in _ANCHORS), re.IGNORECASE)
# A sentence ends at 。！？ or at a period that is not a decimal point.
_SENTENCE_END = re.compile(r"[。！？]|(?<!\d)\.(?!\d)|\.(?=\s|$)")
_LEADING_LETTER = re.compile(
    r"""^[\s:：是は为為\-–—*]*(?:\\text\{)?[(\[（*]*\s*([A-J])\s*[)\]）*}]*(?![A-Za-z0-9])"""
)
_DECORATION = re.compile(r"\\text(?:bf)?\{([^{}]*)\}|[$*]")
# A choice letter alone, optionally in brackets, optionally followed by the option text: "C", "(C)",
# "C)", "C) 29", "C. 29". A leading letter of a word ("Consider ...") never matches.
_BARE_LETTER = re.compile(r"^[(\[（]?([A-J])(?:[)\]）.:]?\s*$|[)\]）.:]\s+\S.*$)")


def _grade_math(region: str, gold: str, integer: bool) -> Grade:
    candidate, how = extract_math_answer(region)
    if candidate is None:
        return Grade(None, False, how)
    if integer:
        gold_int = _as_integer(gold)
        value = _as_integer(candidate)
        if value is not None:
            return Grade(
                candidate,
                value == gold_int,
                f"{how}: integer {'matches' if value == gold_int else 'differs'}",
            )
    verdict = _math_verify(gold, candidate, from_box=how == "boxed")
    if verdict is None:
        return Grade(candidate, False, f"{how}: unparsable")
    return Grade(candidate, verdict, f"{how}: {'equivalent' if verdict else 'not equivalent'}")


def _grade_letter(region: str, gold: str) -> Grade:
    gold_letter = _bare_letter(gold.strip())
    letter, how = extract_letter(region)
    if letter is None:
        return Grade(None, False, how)
    ok = letter == gold_letter
    return Grade(letter, ok, f"{how}: {'matches' if ok else 'differs'}")


def _math_verify(gold: str, candidate: str, from_box: bool) -> bool | None:
    """math-verify equivalence; ``None`` when the candidate parses to nothing."""
    from math_verify import parse, verify  # imported late: sympy import costs ~1 s

    # math-verify's timeouts use signal.alarm, which only works on the main thread (Ray async actors,
    # thread pools): elsewhere run without a timeout rather than raising.
    limit = 5 if threading.current_thread() is threading.main_thread() else None
    gold_parsed = parse(f"${gold}$", parsing_timeout=limit)
    pred_parsed = parse(f"\\boxed{{{candidate}}}" if from_box else candidate, parsing_timeout=limit)
    if not from_box and "\\" in candidate:
        # An anchor's answer with LaTeX commands ("2\sqrt{2}") read as plain text keeps only the
        # number before the first command, so read it as a math span. Prose such as "is 7" stays plain
        # text: as a math span it would be the product i*s*7.
        pred_parsed = parse(f"${candidate}$", parsing_timeout=limit) or pred_parsed
    if not pred_parsed:
        return None
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=limit))


def _after_last_anchor(region: str) -> str | None:
    matches = list(_ANCHOR_RE.finditer(region))
    return region[matches[-1].end() :] if matches else None


def _has_unclosed_box(text: str) -> bool:
    return bool(re.search(r"\\(?:boxed|fbox)\s*\{", text))


def _bare_letter(text: str) -> str | None:
    plain = _DECORATION.sub(lambda m: m.group(1) or "", text).strip()
    match = _BARE_LETTER.match(plain)
    return match.group(1) if match else None


# An integer literal: plain digits ("033"), or digits grouped in threes by commas ("1,000", "-12,345").
_INTEGER = re.compile(r"[-+]?(?:\d+|\d{1,3}(?:,\d{3})+)")


def _as_integer(text: str) -> int | None:
    """The integer ``text`` writes, else ``None`` (math-verify then judges it).

    Commas count only as thousands separators (LaTeX's ``{,}`` and ``\\,`` too), and whitespace never
    joins digits: "3, 5", "2 3" and "1,2" are lists or prose, not 35, 23 and 12.
    """
    plain = re.sub(r"\\text\{([^{}]*)\}", r"\1", text).replace("$", "")
    plain = re.sub(r"\{,\}|\\,", ",", plain)
    plain = re.sub(r"\\[!; ]|~", " ", plain).strip()
    plain = re.sub(r"^([-+])\s+", r"\1", plain)  # "- 5": the sign may stand apart from its number
    return int(plain.replace(",", "")) if _INTEGER.fullmatch(plain) else None


__all__ = [
    "ANSWER_TYPES",
    "GRADER_VERSION",
    "AnswerType",
    "Grade",
    "answer_region",
    "extract_letter",
    "extract_math_answer",
    "grade_answer",
    "validate_gold",
]
