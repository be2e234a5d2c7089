"""``teacher.kind: vllm`` through synthesis: the local teacher on vLLM's async engine runs inside the
Ray Data actor pool, with the engine settings of its section, behind the same cache and verification
as every teacher; its replies are the transformers teacher's (greedy, float32), and a rerun sends
nothing. The teacher is the briefly trained tiny student: it writes text (the random-init student
answers these prompts with special tokens only) and has a head size vLLM's CPU attention supports."""

from __future__ import annotations

import asyncio

import pytest
from synth_helpers import seed_record, write_seeds

from l2ray.recipe import recipe_from_dict
from l2ray.synth.prompts import translate_question_messages
from l2ray.teacher.base import SamplingParams
from l2ray.teacher.client import RoleClients

pytest.importorskip("vllm")
pytestmark = pytest.mark.slow


def test_synthesis_on_a_vllm_teacher_caches_what_the_transformers_teacher_writes(
    ray_cluster, trained_student, tmp_path
):
    from l2ray.synth.api import synthesize
    from l2ray.synth.roles import role_setups
    from l2ray.teacher.local import TransformersTeacher

    model = str(trained_student)
    seeds = write_seeds(tmp_path / "seeds.jsonl", [seed_record(i) for i in range(2)])
    recipe = recipe_from_dict(
        {
            "name": "vllm-teacher",
            "output_dir": str(tmp_path / "runs"),
            "languages": ["fr"],
            "seeds": {"source": str(seeds)},
            "teacher": {
                "kind": "vllm",
                "model": model,
                "vllm": {"dtype": "float32", "enforce_eager": True, "max_num_seqs": 8},
                "temperature": 0.0,
                "max_tokens": 24,
                "use_recorded": False,
            },
            "synth": {"kinds": ["original", "whole"], "actors": 1, "progress": False},
        }
    )
    first = synthesize(recipe).summary
    # Every seed is accounted for: the student cannot translate, so whole traces are rejected, each with
    # its reason (here a reply cut off at max_tokens: final, never re-sent), and the originals pass.
    assert first["rows"] + first["rejected"] == 4 and not first["seeds"]["without_rows"]
    assert first["rejected_by_reason"] == {"truncated": first["rejected"]} and first["rows"] == 2
    assert first["this_run"]["requests_sent"] == first["this_run"]["requests"] > 0, first
    clients = RoleClients(role_setups(recipe), recipe.synth.prompt_version, build=False)
    messages = translate_question_messages(seed_record(0)["question"], "fr")
    cached = clients.translator.cached(messages)
    params = SamplingParams(temperature=0.0, top_p=recipe.teacher.top_p, max_tokens=24)
    expected = asyncio.run(TransformersTeacher(model, device="cpu").complete(messages, params))
    assert cached is not None and cached.text == expected.text
    again = synthesize(recipe).summary
    assert again["this_run"]["requests_sent"] == 0 and again["rows"] == first["rows"]
