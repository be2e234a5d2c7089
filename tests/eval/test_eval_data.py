"""Benchmarks (registered field maps on datasets saved to disk, files, errors) and metrics, no Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

from l2ray.decode.types import Completion
from l2ray.eval.benchmarks import BenchmarkError, load_benchmark, resolve_spec
from l2ray.eval.metrics import pass_at_k, score_sample, summarise
from l2ray.recipe import BenchmarkSpec
from l2ray.thinking import split_thinking


def test_bundled_mini_set_has_40_math_and_5_letter_items() -> None:
    data = load_benchmark("mini")
    types = [p.answer_type for p in data.problems]
    assert (types.count("math"), types.count("letter")) == (40, 5)
    letter = next(p for p in data.problems if p.answer_type == "letter")
    assert "\nA) " in letter.question and letter.answer in "ABCD"
    assert load_benchmark("mini", limit=4).identity()["problems"] == 4


def test_aime24_field_map_on_a_dataset_saved_to_disk(tmp_path: Path) -> None:
    rows = {
        "id": [60, 61],
        "problem": ["Find $x$.", "Find $y$."],
        "answer": ["033", "25"],
        "solution": ["", ""],
    }
    DatasetDict({"train": Dataset.from_dict(rows)}).save_to_disk(tmp_path / "aime")
    data = load_benchmark(BenchmarkSpec(name="aime24", source=str(tmp_path / "aime")))
    assert [(p.id, p.question, p.answer, p.answer_type) for p in data.problems] == [
        ("60", "Find $x$.", "033", "integer"),
        ("61", "Find $y$.", "25", "integer"),
    ]
    assert data.identity()["split"] == "train" and data.identity()["content_hash"]


def test_math500_field_map(tmp_path: Path) -> None:
    rows = {"problem": ["Compute $1+1$."], "answer": ["2"], "unique_id": ["test/algebra/1.json"]}
    Dataset.from_dict(rows).save_to_disk(tmp_path / "m500")
    [problem] = load_benchmark(BenchmarkSpec(name="math500", source=str(tmp_path / "m500"))).problems
    assert (problem.id, problem.answer, problem.answer_type) == ("test/algebra/1.json", "2", "math")


def test_gpqa_choices_are_shuffled_into_letters_with_a_seed(tmp_path: Path) -> None:
    rows = {
        "Record ID": [f"rec{i}" for i in range(6)],
        "Question": [f"Question {i}?" for i in range(6)],
        "Correct Answer": [f"right {i}" for i in range(6)],
        "Incorrect Answer 1": [f"wrong a{i}" for i in range(6)],
        "Incorrect Answer 2": [f"wrong b{i}" for i in range(6)],
        "Incorrect Answer 3": [f"wrong c{i}" for i in range(6)],
    }
    Dataset.from_dict(rows).save_to_disk(tmp_path / "gpqa")
    spec = BenchmarkSpec(name="gpqa_diamond", source=str(tmp_path / "gpqa"))
    first = load_benchmark(spec, seed=1).problems
    for index, problem in enumerate(first):
        options = dict(line.split(") ", 1) for line in problem.question.splitlines()[1:])
        assert sorted(options) == ["A", "B", "C", "D"]
        assert options[problem.answer] == f"right {index}"
        assert problem.answer_type == "letter"
    assert [p.question for p in load_benchmark(spec, seed=1).problems] == [p.question for p in first]
    # Six rows with four positions each: a different seed moves at least one correct answer.
    assert [p.answer for p in load_benchmark(spec, seed=2).problems] != [p.answer for p in first]
    assert load_benchmark(spec, seed=1, limit=2).problems == first[:2]


def test_jsonl_and_parquet_sets_with_own_field_names(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps({"q": f"Q{i}", "gold": i}) for i in range(3)) + "\n")
    spec = BenchmarkSpec(name="mine", source=str(path), question_field="q", answer_field="gold")
    assert [p.answer for p in load_benchmark(spec).problems] == ["0", "1", "2"]
    Dataset.from_dict({"question": ["Q"], "answer": ["B"]}).to_parquet(tmp_path / "mc.parquet")
    [problem] = load_benchmark(
        BenchmarkSpec(name="mc", source=str(tmp_path / "mc.parquet"), answer_type="letter")
    ).problems
    assert (problem.id, problem.answer_type) == ("mc-1", "letter")
    assert resolve_spec(str(path)).name == "mine"


def test_unknown_benchmark_is_a_clear_error() -> None:
    with pytest.raises(BenchmarkError, match=r"unknown benchmark 'aime2024'; registered: mini, aime24"):
        load_benchmark("aime2024")


def test_dataset_missing_the_answer_field_is_a_clear_error(tmp_path: Path) -> None:
    Dataset.from_dict({"problem": ["Find $x$."], "solution": ["x = 1"]}).save_to_disk(tmp_path / "noans")
    with pytest.raises(BenchmarkError) as info:
        load_benchmark(BenchmarkSpec(name="aime24", source=str(tmp_path / "noans")))
    message = str(info.value)
    assert "row 1" in message and "'answer' is missing" in message and "['problem', 'solution']" in message
    assert "answer_field" in message


def test_split_thinking() -> None:
    assert split_thinking("<think>\nabc</think>\n\nThe answer") == ("abc", "The answer", True)
    assert split_thinking("<|lang:zh|>还在想") == ("<|lang:zh|>还在想", "", False)


def test_pass_at_k_is_the_unbiased_estimator() -> None:
    assert pass_at_k(4, 0, 2) == 0.0
    assert pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(4, 1, 1) == 0.25
    assert pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)
    with pytest.raises(ValueError, match="needs at least 3 samples"):
        pass_at_k(2, 1, 3)


def test_summary_counts_failures_as_wrong_and_keeps_them_out_of_token_stats() -> None:
    def encode(text: str) -> list[str]:
        return text.split()

    rows = [
        {
            "benchmark": "b",
            "problem_id": f"p{i // 2}",
            "sample": i % 2,
            "configuration": "off",
            "question": "q",
            "gold": "4",
            "answer_type": "math",
        }
        for i in range(4)
    ]
    generations = [  # a reasoning student's: each began inside the <think> its prompt opened
        Completion("a b c</think>so \\boxed{4}", "stop", starts_in_thinking=True),
        Completion("a b c d e f g h i j", "length", starts_in_thinking=True),
        Completion(None, error="HTTP 500: boom"),
        Completion("<|lang:zh|>等等，我再想一想这个问题。</think>答案是 4", "stop", starts_in_thinking=True),
    ]
    records = [score_sample(r, g, encode) for r, g in zip(rows, generations, strict=True)]
    assert [r["correct"] for r in records] == [True, False, False, True]
    assert records[2]["failed"] and records[2]["grade_reason"] == "request failed: HTTP 500: boom"
    m = summarise(records)["b"]["off"]
    assert (m["samples"], m["problems"], m["samples_per_problem"], m["failures"]) == (4, 2, 2, 1)
    assert m["accuracy"] == 0.5 and m["failure_rate"] == 0.25
    assert m["thinking_tokens"] == {"mean": pytest.approx((3 + 10 + 1) / 3, abs=1e-6), "median": 3.0}
    # Per problem and sample, a failure kept as None: what promotion pairs two evaluations on.
    assert m["thinking_tokens_by_problem"] == {"p0": [3, 10], "p1": [None, 1]}
    assert m["truncation_rate"] == pytest.approx(1 / 3, abs=1e-6)
    assert m["empty_answer_rate"] == pytest.approx(1 / 3, abs=1e-6)
    assert m["pass_at_k"] == {"1": 0.5, "2": 1.0}
    assert m["language_shares"]["zh"] > 0


def test_gold_answers_that_do_not_fit_the_answer_type_are_rejected_at_load(tmp_path: Path) -> None:
    path = tmp_path / "mc.jsonl"
    path.write_text(json.dumps({"question": "Pick one.", "answer": "AB", "answer_type": "letter"}) + "\n")
    spec = BenchmarkSpec(name="mc", source=str(path), answer_type_field="answer_type")
    with pytest.raises(
        BenchmarkError, match=r"row 1, field 'answer': gold answer 'AB' is not a single choice"
    ):
        load_benchmark(spec)
    path.write_text(json.dumps({"question": "Q", "answer": "1", "answer_type": "essay"}) + "\n")
    with pytest.raises(BenchmarkError, match="unknown answer_type 'essay'"):
        load_benchmark(spec)


def test_a_plain_models_reply_is_all_answer_and_no_thinking() -> None:
    """A model whose prompt opened no thinking (a base model before training): its text is the answer."""
    row = {"benchmark": "b", "problem_id": "p", "sample": 0, "configuration": "off", "question": "q"}
    record = score_sample(
        {**row, "gold": "4", "answer_type": "math"}, Completion("The answer is 4.", "stop"), str.split
    )
    assert (record["thinking_tokens"], record["answer_tokens"], record["closed_thinking"]) == (0, 4, True)
    assert record["correct"]
