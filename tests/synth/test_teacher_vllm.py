"""``teacher.kind: vllm``: the local teacher on vLLM's async engine answers like the transformers one
(greedy, float32) and counts its tokens; the config registers the kind."""

from __future__ import annotations

import asyncio

import pytest

from l2ray.teacher.base import SamplingParams
from l2ray.teacher.client import build_teacher
from l2ray.teacher.config import TeacherConfig

pytest.importorskip("vllm")
pytestmark = pytest.mark.slow


def test_the_vllm_teacher_answers_like_the_transformers_teacher(student_path, tmp_path):
    from l2ray.teacher.local import TransformersTeacher
    from l2ray.teacher.vllm import VllmTeacher

    messages = [{"role": "user", "content": "What is 12+30? Think step by step."}]
    params = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=12)
    teacher = VllmTeacher(str(student_path), engine={"dtype": "float32", "enforce_eager": True})

    async def both():
        replies = await asyncio.gather(*(teacher.complete(messages, params) for _ in range(3)))
        await teacher.aclose()
        return replies

    replies = asyncio.run(both())
    expected = asyncio.run(TransformersTeacher(str(student_path), device="cpu").complete(messages, params))
    assert {r.text for r in replies} == {expected.text}
    assert replies[0].usage == expected.usage and replies[0].finish_reason == "length"
    assert isinstance(build_teacher(TeacherConfig(kind="vllm", model=str(student_path))), VllmTeacher)
