"""The pilot study: the seed problems asked in each language, with the tokenizer's compression."""

from __future__ import annotations

from pathlib import Path

import pytest
from evalkit import completion, make_recipe, mini_answers, question_of, register_versions
from transformers import AutoTokenizer

from l2ray.eval.api import promote, run_eval, run_pilot
from l2ray.eval.mlflow_log import EVAL_HASH_TAG, EVAL_RUN_TAG, STAGE_TAG
from l2ray.eval.pilot import per_language, pilot_problems, tokenizer_compression
from l2ray.languages import LANGUAGES
from l2ray.mlflow_store import mlflow_client
from l2ray.synth.api import translate_questions, translator


def test_compression_counts_tokens_per_character_of_the_same_questions(student_path, tmp_path: Path) -> None:
    recipe = make_recipe(tmp_path, student_path, limit=3)
    english = [p.question for p in pilot_problems(recipe)]
    chinese = translate_questions(recipe, english, "zh")  # the recorded teacher content answers offline
    assert len(chinese) == 3 and all(any("\u4e00" <= c <= "\u9fff" for c in q) for q in chinese)
    compression = tokenizer_compression(str(student_path), {"en": english, "zh": chinese})
    tok = AutoTokenizer.from_pretrained(student_path)
    for lang, texts in (("en", english), ("zh", chinese)):
        tokens = sum(len(tok.encode(t, add_special_tokens=False)) for t in texts)
        assert compression[lang]["tokens"] == tokens
        assert compression[lang]["tokens_per_char"] == pytest.approx(tokens / sum(map(len, texts)), abs=1e-6)
    assert compression["en"]["relative_to_en"] == 1.0
    ratio = compression["zh"]["tokens"] / compression["en"]["tokens"]
    assert compression["zh"]["relative_to_en"] == pytest.approx(ratio, abs=1e-6)


def test_per_language_divides_thinking_by_the_tokenizer_ratio() -> None:
    metrics = {
        "accuracy": 0.5,
        "accuracy_se": 0.1,
        "thinking_tokens": {"mean": 80.0},
        "answer_tokens": {"mean": 5.0},
        "language_shares": {"zh": 0.9, "en": 0.1},
        "failures": 0,
    }
    rows = per_language({"zh": metrics}, {"zh": {"tokens_per_char": 0.6, "relative_to_en": 0.8}})
    assert rows["zh"]["thinking_tokens_en_equivalent"] == 100.0
    assert rows["zh"]["share_in_own_language"] == 0.9


@pytest.mark.slow
def test_pilot_asks_each_language_and_reports_per_language(
    ray_cluster, student_path, tmp_path: Path, chat_server
) -> None:
    def behaviour(body: dict) -> tuple[int, dict]:
        # Right in English, wrong in Chinese, with a short Chinese thinking part for zh questions.
        content = body["messages"][-1]["content"]
        chinese = LANGUAGES["zh"].reasoning_instruction in content
        thinking = (
            "<|lang:zh|>我们来仔细算一算这个问题。"
            if chinese
            else "<|lang:en|>Let me work this out carefully now."
        )
        return 200, completion(f"{thinking}</think>\n\n\\boxed{{{'-1' if chinese else gold[content]}}}")

    recipe = make_recipe(tmp_path, student_path, limit=2, pilot_languages=["zh"])
    problems = pilot_problems(recipe)
    gold = {f"{p.question}\n\n{LANGUAGES['en'].reasoning_instruction}": p.answer for p in problems}
    server = chat_server(behaviour)
    recipe = make_recipe(tmp_path, student_path, limit=2, pilot_languages=["zh"], endpoint=server.base_url)
    result = run_pilot(recipe, translator(recipe))
    rows = result.summary["per_language"]
    assert list(rows) == ["en", "zh"]
    assert (rows["en"]["accuracy"], rows["zh"]["accuracy"]) == (1.0, 0.0)
    assert rows["zh"]["share_in_own_language"] == 1.0 and rows["en"]["share_in_own_language"] == 1.0
    assert rows["zh"]["relative_to_en"] == result.summary["compression"]["zh"]["relative_to_en"]
    sent = [b["messages"][-1]["content"] for b in server.requests]
    assert len(sent) == 4 and sum(LANGUAGES["zh"].reasoning_instruction in c for c in sent) == 2
    for question in result.summary["questions"]["zh"]:
        assert any(c.startswith(question) for c in sent)
    for name in ("pilot.png", "report.md", "summary.json", "samples.jsonl"):
        assert (result.out_dir / name).stat().st_size > 0
    assert "Pilot: the same problems in each language" in (result.out_dir / "report.md").read_text()


@pytest.mark.slow
def test_a_pilot_of_a_version_leaves_its_evaluation_for_promotion(
    ray_cluster, student_path, tmp_path: Path, chat_server
) -> None:
    answers = mini_answers()

    def behaviour(body: dict) -> tuple[int, dict]:
        # Mini questions answered right; pilot questions (seed set, any language) answered 0.
        gold = answers.get(question_of(body), "0")
        return 200, completion(f"<|lang:en|>Let me think.</think>\n\n\\boxed{{{gold}}}")

    server = chat_server(behaviour)
    recipe = make_recipe(tmp_path, student_path, limit=2, pilot_languages=["zh"], endpoint=server.base_url)
    name = recipe.registered_model_name
    register_versions(recipe.tracking_uri, name, 2, tmp_path)
    evals = {v: run_eval(recipe, model=f"models:/{name}/{v}") for v in ("1", "2")}
    pilot = run_pilot(recipe, translator(recipe), model=f"models:/{name}/2")

    client = mlflow_client(recipe.tracking_uri)
    tags = client.get_model_version(name, "2").tags
    assert tags[EVAL_RUN_TAG] == evals["2"].mlflow_run_id
    assert tags[EVAL_HASH_TAG] == evals["2"].summary["comparable_hash"]
    assert pilot.summary["comparable_hash"] != evals["2"].summary["comparable_hash"]
    # The pilot is still logged, findable by its stage and version.
    run = client.get_run(pilot.mlflow_run_id)
    assert run.data.tags[STAGE_TAG] == "pilot" and run.data.tags["l2ray.model_version"] == "2"
    # Promotion compares the two evaluations (equal fingerprints), not the pilot: 2 may replace 1.
    assert promote(recipe, "1").outcome == "promoted"
    decision = promote(recipe, "2")
    assert decision.outcome == "promoted", decision.reasons
    assert decision.reasons[0].startswith("mini/off: accuracy 1.000 vs champion 1.000")
