"""Pure synthesis logic: switch plans, reply parsing, assembly and verification, recorded content."""

from __future__ import annotations

import itertools
import json
import random

from synth_helpers import seed_record

from l2ray.data.seeds import SeedRow
from l2ray.recipe import SynthConfig, TeacherConfig
from l2ray.synth.assemble import assemble
from l2ray.synth.prompts import (
    parse_solution,
    restore_whitespace,
    solve_messages,
    translate_fragment_messages,
    translate_question_messages,
)
from l2ray.synth.recorded import load_recorded
from l2ray.synth.task import SynthTask
from l2ray.synth.task_plan import expand_seed, group_tasks, plan_languages, recipe_fingerprint, request_keys
from l2ray.teacher import ResponseCache, TeacherClient
from l2ray.text import parse_tagged, segment


def test_switch_plans_are_seeded_weighted_and_never_repeat_the_previous_language():
    plans = [plan_languages(40, ["zh", "ja", "fr"], 0.7, None, random.Random(s)) for s in range(50)]
    for plan in plans:
        assert plan[0] == "en"
        assert all(a != b or a == "en" for a, b in itertools.pairwise(plan))
    assert plans[3] == plan_languages(40, ["zh", "ja", "fr"], 0.7, None, random.Random(3))
    weighted = plan_languages(200, ["zh", "fr"], 1.0, {"zh": 1.0}, random.Random(0))
    assert set(weighted) == {"en", "zh"}  # fr has no weight; after zh only English is left
    assert plan_languages(10, ["de"], 0.0, None, random.Random(0)) == ["en"] * 10


def test_expansion_gives_stable_ids_per_kind_language_and_recipe():
    seed = SeedRow(source="t", **seed_record(1))
    synth = SynthConfig(mixed_per_seed=2, p_switch=1.0)
    one = TeacherConfig()
    fp = recipe_fingerprint({"translator": one, "reasoner": one}, synth, 0)
    tasks = expand_seed(seed, ["zh", "fr"], synth, fp, 0)
    assert [t.kind for t in tasks] == ["original", "whole", "whole", "mixed", "mixed"]
    assert [t.id for t in tasks] == [t.id for t in expand_seed(seed, ["zh", "fr"], synth, fp, 0)]
    assert len({t.id for t in tasks}) == 5
    other = recipe_fingerprint({"translator": one, "reasoner": TeacherConfig(model="another")}, synth, 0)
    assert not {t.id for t in tasks} & {t.id for t in expand_seed(seed, ["zh", "fr"], synth, other, 0)}


def test_reply_parsing_and_whitespace_restoration():
    assert parse_solution("<think>\nstep\n</think>\n\nSo $\\boxed{3}$.") == ("step", "So $\\boxed{3}$.")
    assert parse_solution("step one\n\nstep two\n\nThus $\\boxed{3}$.") == (
        "step one\n\nstep two",
        "Thus $\\boxed{3}$.",
    )
    assert restore_whitespace("\n\nWait, $x$ fails. ", "  Attendez, $x$ échoue.\n") == (
        "\n\nAttendez, $x$ échoue. "
    )


def _task(seed: SeedRow, kind: str, langs: list[str]) -> SynthTask:
    return SynthTask(id="t", kind=kind, languages=langs, seed=seed)


def _outcome(**responses) -> dict:
    return {"responses": responses, "requests": [], "error": None}


def test_mixed_traces_are_tagged_at_every_switch_and_checked_per_fragment():
    seed = SeedRow(source="t", **seed_record(2))
    fragments = segment(seed.cot)
    assert len(fragments) == 3
    good = {
        "1": "Attendez, vérifions encore : $a$ était défini comme $12$.",
        "2": "嗯，是的，这个值是 $12$，没有别的。",
    }
    status, row = assemble(_task(seed, "mixed", ["en", "fr", "zh"]), _outcome(fragments=good), 0.6)
    assert status == "accepted"
    assert [code for code, _ in parse_tagged(row["cot"])] == ["en", "fr", "zh"]
    assert row["cot"].startswith("<|lang:en|>So $a = 12$") and row["question_lang"] == "en"
    lost_math = {**good, "1": "Attendez, vérifions encore : a était défini comme douze."}
    status, row = assemble(_task(seed, "mixed", ["en", "fr", "zh"]), _outcome(fragments=lost_math), 0.6)
    assert (status, row["reason"]) == ("rejected", "fragment_math")
    wrong_language = {**good, "1": "Wait, let us check again: $a$ was defined as $12$."}
    status, row = assemble(_task(seed, "mixed", ["en", "fr", "zh"]), _outcome(fragments=wrong_language), 0.6)
    assert (status, row["reason"]) == ("rejected", "fragment_language")


def test_whole_traces_need_the_gold_answer_and_the_target_language():
    seed = SeedRow(source="t", **seed_record(3))
    question = "设 $a = 13$。求 $a$ 的值。"
    right = "<think>\n题目直接给出了这个值，所以不需要额外计算。\n</think>\n\n答案是 $\\boxed{13}$。"
    status, row = assemble(_task(seed, "whole", ["zh"]), _outcome(question=question, solution=right), 0.6)
    assert status == "accepted" and row["cot"].startswith("<|lang:zh|>") and row["question_lang"] == "zh"
    wrong = right.replace("{13}", "{14}")
    status, row = assemble(_task(seed, "whole", ["zh"]), _outcome(question=question, solution=wrong), 0.6)
    assert (status, row["reason"]) == ("rejected", "wrong_answer")
    english = (
        "<think>\nThe statement gives the value directly, nothing to compute.\n</think>\n\n$\\boxed{13}$"
    )
    status, row = assemble(_task(seed, "whole", ["zh"]), _outcome(question=question, solution=english), 0.6)
    assert (status, row["reason"]) == ("rejected", "language_share")


def test_teacher_markup_and_unforeseen_errors_reject_one_row_with_their_cause():
    seed = SeedRow(source="t", **seed_record(3))
    question = "设 $a = 13$。求 $a$ 的值。"
    # A reasoning reply cut off before </think>: the opening <think> would land inside the trace.
    cut = "<think>\n题目直接给出了这个值，所以答案是 $\\boxed{13}$，不需要额外计算。"
    status, row = assemble(_task(seed, "whole", ["zh"]), _outcome(question=question, solution=cut), 0.6)
    assert (status, row["reason"]) == ("rejected", "teacher_markup") and "<think>" in row["detail"]

    fragments = {"1": "Attendez <|lang:de|> : $a$ était défini comme $13$.", "2": "嗯，是的，值是 $13$。"}
    status, row = assemble(_task(seed, "mixed", ["en", "fr", "zh"]), _outcome(fragments=fragments), 0.6)
    assert (status, row["reason"]) == ("rejected", "teacher_markup") and "fragment 1" in row["detail"]

    status, row = assemble(_task(seed, "whole", ["zh"]), _outcome(question=question), 0.6)
    assert (status, row["reason"]) == ("rejected", "internal:KeyError") and "solution" in row["detail"]
    assert row["id"] == "t" and row["seed_id"] == seed.id  # still accounted for


def test_tasks_that_share_a_request_are_grouped_within_the_cap():
    synth = SynthConfig(mixed_per_seed=3, p_switch=1.0)
    one = SeedRow(source="t", **seed_record(1))
    twin = SeedRow(source="t", **{**seed_record(1), "id": "twin"})  # same question and CoT
    other = SeedRow(source="t", **seed_record(2))
    tasks = [t for seed in (one, twin, other) for t in expand_seed(seed, ["zh"], synth, "fp", 0)]
    # With one target, the three mixed plans of a seed switch the same fragments: identical requests.
    mixed = [request_keys(t) for t in tasks[:5] if t.kind == "mixed"]
    assert mixed[0] and mixed[0] == mixed[1] == mixed[2]

    groups = group_tasks(tasks, max_group=64)
    assert sorted(sorted({t.seed_id for t in g}) for g in groups) == [["s1", "twin"], ["s2"]]
    assert sorted(t.id for g in groups for t in g) == sorted(t.id for t in tasks)
    # Under a cap of 5 the twins stay apart (their shared requests may then be sent twice), but a
    # seed's own tasks are never split.
    capped = group_tasks(tasks, max_group=5)
    assert sorted(len(g) for g in capped) == [5, 5, 5]
    assert all(len({t.seed_id for t in g}) == 1 for g in capped)


def test_recorded_content_becomes_cache_entries_under_the_real_fingerprints(tmp_path):
    seed = SeedRow(source="t", **seed_record(4))
    fragments = segment(seed.cot)
    lines = [
        {"kind": "question", "seed_id": "s4", "lang": "zh", "text": "设 $a = 14$。求 $a$。"},
        {"kind": "whole", "seed_id": "s4", "lang": "zh", "cot": "直接得到。", "response": "$\\boxed{14}$"},
        {
            "kind": "fragment",
            "seed_id": "s4",
            "lang": "zh",
            "index": 1,
            "source": fragments[1],
            "text": "等等。",
        },
        {
            "kind": "fragment",
            "seed_id": "s4",
            "lang": "zh",
            "index": 2,
            "source": "stale text",
            "text": "嗯。",
        },
        {"kind": "question", "seed_id": "not-in-this-run", "lang": "zh", "text": "无关"},
    ]
    (tmp_path / "zh.jsonl").write_text(
        "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n{bad\n"
    )
    teacher = TeacherConfig(recorded_dir=str(tmp_path))
    loaded = load_recorded([seed], {"translator": teacher, "reasoner": teacher}, "v1", ["zh", "fr"])
    assert len(loaded.entries) == 3
    assert any("fr.jsonl: no recorded content" in p for p in loaded.problems)
    assert any("fragment 2 of s4 does not match" in p for p in loaded.problems)
    assert any("not valid JSON" in p for p in loaded.problems)
    client = TeacherClient(None, ResponseCache(tmp_path / "cache", loaded.entries), teacher, "v1")
    question = client.cached(translate_question_messages(seed.question, "zh"))
    assert question is not None and question.text.startswith("设")
    solve = client.cached(solve_messages(question.text, "zh"))
    assert solve is not None and solve.text == "<think>\n直接得到。\n</think>\n\n$\\boxed{14}$"
    assert client.cached(translate_fragment_messages(fragments[1], "zh")).text == "等等。"
    real = TeacherConfig(model="a-real-model", recorded_dir=str(tmp_path))
    assert load_recorded([seed], {"translator": real, "reasoner": real}, "v1", ["zh"]).entries == []
    # Roles split: the recorded translator answers questions and fragments, never the reasoning.
    split = load_recorded([seed], {"translator": teacher, "reasoner": real}, "v1", ["zh"])
    assert {e.meta["kind"] for e in split.entries} == {"question", "fragment"}
