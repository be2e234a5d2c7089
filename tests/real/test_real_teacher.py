"""Synthesis with a real LLM as the local teacher: SmolLM2-135M-Instruct on vLLM (``teacher.kind: vllm``)
translates lab questions and reasons in the target language; verification judges what it wrote —
every seed is accounted for, and each rejected trace says why (a 135M model's French arithmetic is
mostly wrong, which is what the verifier is for)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from l2ray.recipe import load_recipe
from l2ray.synth.prompts import translate_question_messages
from l2ray.text.langmix import measure_language_mix

pytest.importorskip("vllm")
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_a_real_llm_teacher_writes_real_text_and_verification_says_what_is_wrong(
    ray_cluster, smollm2_path, tmp_path
):
    from l2ray.synth.api import synthesize
    from l2ray.synth.roles import role_setups
    from l2ray.teacher.client import RoleClients

    overrides = [
        f"output_dir={tmp_path}",
        "teacher.kind=vllm",
        f"teacher.model={smollm2_path}",
        "teacher.max_tokens=160",
        "seeds.limit=2",
        "languages=[fr]",
        "synth.kinds=[whole]",
        "synth.progress=false",
    ]
    recipe = load_recipe(REPO / "configs" / "real.yaml", overrides)
    summary = synthesize(recipe).summary
    assert summary["rows"] + summary["rejected"] == 2 and not summary["seeds"]["without_rows"]
    assert summary["this_run"]["requests_sent"] == summary["this_run"]["requests"] > 0
    rejected = [
        row
        for shard in (recipe.run_dir / "synth" / "rejected").glob("*.parquet")
        for row in pq.read_table(shard).to_pylist()
    ]
    assert len(rejected) == summary["rejected"] and all(row["reason"] for row in rejected)
    assert sum(summary["rejected_by_reason"].values()) == summary["rejected"]
    # The translator's replies are the model's own text, kept in the cache (never sent twice).
    clients = RoleClients(role_setups(recipe), recipe.synth.prompt_version, build=False)
    seed_question = recipe_seed_question(recipe)
    translated = clients.translator.cached(translate_question_messages(seed_question, "fr"))
    assert translated is not None and translated.text.strip() and translated.text != seed_question
    assert measure_language_mix(translated.text).char_share  # words of a language, not special tokens


def recipe_seed_question(recipe) -> str:
    from l2ray.data.seeds import load_seeds

    return load_seeds(recipe.seeds).rows[0].question
