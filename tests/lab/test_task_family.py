"""The lab's task family, renderers, programmatic teacher and paraphrase baseline (pure, no Ray)."""

from __future__ import annotations

import asyncio

import pytest

from l2ray.lab.config import LAB_LANGUAGES
from l2ray.lab.data import paraphrase_rows, seed_records
from l2ray.lab.render import LabTextError, parse_text, render_text, translate_text
from l2ray.lab.tasks import make_problems, question_plan, response_plan, solution_plan
from l2ray.lab.teacher import LabTeacher, error_rates, problem_from_question
from l2ray.languages import get_language
from l2ray.teacher.base import SamplingParams
from l2ray.text import insert_tags, measure_language_mix, segment
from l2ray.traces import TraceRow

PARAMS = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=2048)
PROBLEMS = make_problems("test", 40, seed=0)
REFLECTION_OPENERS = {
    "en": "Wait",
    "zh": "等等",
    "ja": "待って",
    "de": "Moment",
    "fr": "Attendez",
    "ru": "Подождите",
}


def test_answers_are_correct_by_construction_and_problems_are_multi_step():
    for problem in PROBLEMS:
        total = problem.start
        for op in problem.ops:
            total += op.amount if op.kind == "add" else -op.amount
            assert 0 <= total <= 20
        assert problem.answer == total
        assert 3 <= len(problem.ops) <= 6
    assert make_problems("test", 5, 0) == PROBLEMS[:5]
    assert {p.id for p in make_problems("eval", 5, 0)}.isdisjoint(p.id for p in PROBLEMS)


@pytest.mark.parametrize("lang", LAB_LANGUAGES)
def test_every_language_renders_parses_back_and_reads_as_itself(lang):
    for problem in PROBLEMS[:10]:
        question, cot = render_text(question_plan(problem), lang), render_text(solution_plan(problem), lang)
        assert parse_text(question, lang)[1] == question_plan(problem)
        assert parse_text(cot)[1] == solution_plan(problem)
        assert measure_language_mix(cot).dominant == lang
        assert f"\\boxed{{{problem.answer}}}" in render_text(response_plan(problem.answer), lang)


@pytest.mark.parametrize("lang", LAB_LANGUAGES)
def test_reflection_turns_reverify_a_step_and_open_a_fragment(lang):
    marker = REFLECTION_OPENERS[lang]
    assert marker in get_language(lang).reflection_markers
    for problem in PROBLEMS[:10]:
        cot = render_text(solution_plan(problem), lang)
        fragments = segment(cot)
        assert len(fragments) == 1 + len(problem.checked_steps())
        assert all(f.startswith(marker) for f in fragments[1:])
        assert "".join(fragments) == cot


def test_the_teacher_translates_questions_and_fragments_and_solves_in_a_language():
    teacher = LabTeacher("lab-teacher")
    problem = PROBLEMS[0]
    english = render_text(question_plan(problem), "en")
    ask = [{"role": "user", "content": f"Translate into Japanese (ja).\n\nProblem:\n{english}"}]
    reply = asyncio.run(teacher.complete(ask, PARAMS)).text
    assert reply == render_text(question_plan(problem), "ja")
    solve = [
        {
            "role": "system",
            "content": "Think step by step, only in Russian (ru), between <think> and </think>.",
        },
        {"role": "user", "content": f"{reply}\n\n{get_language('ru').reasoning_instruction}"},
    ]
    text = asyncio.run(teacher.complete(solve, PARAMS)).text
    assert text == (
        f"<think>\n{render_text(solution_plan(problem), 'ru')}\n</think>\n\n"
        f"{render_text(response_plan(problem.answer), 'ru')}"
    )
    fragment = segment(render_text(solution_plan(problem), "en"))[1]
    ask = [
        {"role": "user", "content": f"Translate this fragment into Chinese (zh).\n\nFragment:\n{fragment}"}
    ]
    assert asyncio.run(teacher.complete(ask, PARAMS)).text == translate_text(fragment.strip(), "zh")


def test_teacher_errors_come_at_the_set_rates_and_are_the_same_for_the_same_request():
    teacher = LabTeacher("lab-teacher?wrong_step=0.2&wrong_answer=0.2&off_language=0.2")
    solves = [
        [
            {"role": "system", "content": "Think step by step, only in German (de), inside <think>."},
            {"role": "user", "content": render_text(question_plan(p), "de")},
        ]
        for p in make_problems("rates", 300, 0)
    ]
    drawn = [teacher._error(m) for m in solves]
    assert drawn == [teacher._error(m) for m in solves]
    for kind in ("wrong_step", "wrong_answer", "off_language"):
        assert 0.12 < drawn.count(kind) / len(drawn) < 0.28, kind
    wrong = next(m for m, e in zip(solves, drawn, strict=True) if e == "wrong_answer")
    problem = problem_from_question(wrong[1]["content"])
    text = asyncio.run(teacher.complete(wrong, PARAMS)).text
    assert f"\\boxed{{{problem.answer + 1}}}" in text
    with pytest.raises(LabTextError, match="unknown error kind"):
        error_rates("lab-teacher?wrong_stp=0.1")


def test_the_paraphrase_baseline_has_the_rows_of_l2_and_about_its_tokens():
    seed = seed_records(PROBLEMS[:3])
    rows = []
    for record in seed:
        common = {"seed_id": record["id"], "answer": record["answer"], "response": record["solution"]}
        rows.append(
            TraceRow(
                id=f"{record['id']}-o",
                kind="original",
                question=record["question"],
                question_lang="en",
                cot=insert_tags([("en", record["cot"])]),
                languages=["en"],
                **common,
            )
        )
        problem = problem_from_question(record["question"])
        for lang in ("zh", "ru"):
            rows.append(
                TraceRow(
                    id=f"{record['id']}-{lang}",
                    kind="whole",
                    question=render_text(question_plan(problem), lang),
                    question_lang=lang,
                    cot=insert_tags([(lang, render_text(solution_plan(problem), lang))]),
                    languages=[lang],
                    **common,
                )
            )
    count = len  # characters stand in for tokens here; the study counts with the base's tokenizer
    paraphrased = paraphrase_rows(rows, count)
    assert len(paraphrased) == len(rows)
    assert {r.question_lang for r in paraphrased} == {"en"} and len({r.id for r in paraphrased}) == len(rows)
    target = sum(count(r.assistant_text()) for r in rows)
    assert abs(sum(count(r.assistant_text()) for r in paraphrased) - target) / target < 0.25
