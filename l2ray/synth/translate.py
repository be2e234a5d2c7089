"""Question translation with synthesis's translator: the same prompt, response cache and recorded
content a synthesis run uses, without Ray (`translate_questions`, the pilot's `translator`), and the
cached reply to a question translation that planning reads (`translation_of`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from l2ray.data.seeds import load_seeds
from l2ray.recipe import Recipe
from l2ray.synth.prompts import parse_translation, translate_question_messages
from l2ray.synth.roles import MissingResponsesError, cache_dirs, prompt_version, recorded_content, section_of
from l2ray.teacher.base import Message, require_key
from l2ray.teacher.cache import ResponseCache
from l2ray.teacher.client import TeacherClient, build_teacher


def translate_questions(recipe: Recipe, questions: list[str], lang: str) -> list[str]:
    """Translate ``questions`` into ``lang`` with synthesis's prompt, translator and cache (no Ray)."""
    seeds = load_seeds(recipe.seeds.model_copy(update={"on_error": "skip"})).rows
    recorded = recorded_content(recipe, seeds, [lang])
    config = recipe.teacher_roles["translator"]
    section = section_of(recipe, "translator")
    teacher = build_teacher(config, api_key=require_key(config, section))
    cache = ResponseCache(cache_dirs(recipe)["translator"], recorded.entries)
    client = TeacherClient(teacher, cache, config, prompt_version(recipe))
    conversations = [translate_question_messages(q, lang) for q in questions]
    if teacher is None:
        missing = [
            f"question {i} into {lang}: {q[:60]!r}"
            for i, (q, msgs) in enumerate(zip(questions, conversations, strict=True))
            if client.cached(msgs) is None
        ]
        if missing:
            raise MissingResponsesError(missing, recorded.problems, section)

    async def run() -> list[str]:
        try:
            answers = await asyncio.gather(
                *(client.ask(m, {"kind": "question", "lang": lang}) for m in conversations)
            )
        finally:
            await client.aclose()
        return [parse_translation(a.text) for a in answers]

    return asyncio.run(run())


def translator(recipe: Recipe) -> Callable[[list[str], str], list[str]]:
    """`translate_questions` bound to ``recipe``: the translator `l2ray.eval.api.run_pilot` takes."""
    return functools.partial(translate_questions, recipe)


def translation_of(client: TeacherClient) -> Callable[[list[Message]], str | None]:
    """The cached reply to a question translation, or ``None``."""

    def cached(messages: list[Message]) -> str | None:
        answer = client.cached(messages)
        return answer.text if answer is not None else None

    return cached
