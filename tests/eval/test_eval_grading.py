"""The grader against its regression fixture, plus the errors it raises for bad gold data."""

from __future__ import annotations

import pytest
from grading_cases import CASES

from l2ray.grading import Grade, answer_region, grade_answer


def test_fixture_is_large_enough_and_covers_every_answer_type() -> None:
    assert len(CASES) >= 40
    assert {case[2] for case in CASES} == {"math", "integer", "letter"}


@pytest.mark.parametrize(("response", "gold", "answer_type", "extracted", "correct"), CASES)
def test_regression_fixture(
    response: str, gold: str, answer_type: str, extracted: str | None, correct: bool
) -> None:
    grade = grade_answer(response, gold, answer_type)  # type: ignore[arg-type]
    assert isinstance(grade, Grade)
    assert (grade.extracted, grade.correct) == (extracted, correct), grade.reason
    assert grade.reason


def test_reasons_say_how_the_answer_was_found() -> None:
    assert grade_answer(r"\boxed{4}", "4").reason == "boxed: equivalent"
    assert grade_answer("the answer is 5", "4").reason == "anchor: not equivalent"
    assert grade_answer("nothing here", "4").reason == "no answer"
    assert grade_answer(r"so the answer is \boxed{4", "4").reason == "unclosed box"


def test_answer_region_is_after_the_last_think_end() -> None:
    assert answer_region("<think>a</think>b</think>c") == "c"
    assert answer_region("no thinking") == "no thinking"
    # Thinking that was opened and never closed has no answer region.
    assert answer_region("<think>still thinking") is None
    assert answer_region("still thinking", starts_in_thinking=True) is None
    assert answer_region("a</think>b", starts_in_thinking=True) == "b"


def test_an_answer_in_thinking_the_prompt_opened_is_not_credited() -> None:
    # The in-process engine's prompt ends with <think>, so its text starts mid-thinking without the tag.
    cut = r"17 × 23 = 391, so \boxed{391}"
    assert grade_answer(cut, "391") == Grade("391", True, "boxed: equivalent")  # a model that never thinks
    assert grade_answer(cut, "391", starts_in_thinking=True) == Grade(None, False, "thinking never closed")
    closed = grade_answer(f"{cut}</think> So \\boxed{{391}}.", "391", "integer", starts_in_thinking=True)
    assert closed == Grade("391", True, "boxed: integer matches")


def test_bad_gold_and_answer_type_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="not a single choice letter"):
        grade_answer("C", "AB", "letter")
    with pytest.raises(ValueError, match="not an integer"):
        grade_answer(r"\boxed{1}", "1/2", "integer")
    with pytest.raises(ValueError, match="unknown answer_type"):
        grade_answer("C", "C", "choice")  # type: ignore[arg-type]
