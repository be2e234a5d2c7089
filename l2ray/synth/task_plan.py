"""Expand seeds into trace tasks (pure, no Ray): which traces to build and, for mixed ones, which
fragment goes into which language.

A task is a `l2ray.synth.task.SynthTask`. Its ``id`` is the id of the trace it will become: a hash of
the seed (id and content), the kind, the mixed index, the fragment languages and the recipe
fingerprint, so a rerun recognises finished traces and redoes those of an edited seed.

Example:
    >>> import random
    >>> plan_languages(4, ["zh", "fr"], p_switch=1.0, weights=None, rng=random.Random(0))
    ['en', 'fr', 'zh', 'fr']
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from l2ray.data.seeds import SeedRow
from l2ray.hashing import stable_id
from l2ray.recipe import Role, SynthConfig, TeacherConfig
from l2ray.synth.prompts import (
    parse_translation,
    solve_messages,
    translate_fragment_messages,
    translate_question_messages,
)
from l2ray.synth.task import SynthTask
from l2ray.teacher.base import Message, estimate_tokens
from l2ray.text import segment
from l2ray.traces import TraceKind

SOURCE_LANGUAGE = "en"
TRANSLATION_GROWTH = 1.5
"""A translation's tokens per source token (other scripts cost more tokens than English)."""
MESSAGE_OVERHEAD = 4
"""Tokens the chat format adds per message."""


def recipe_fingerprint(roles: dict[Role, TeacherConfig], synth: SynthConfig, seed: int) -> str:
    """What makes a trace differ between recipes: each role's model and sampling, prompts, the seed
    and the verifier's threshold (a stricter ``min_language_share`` judges every trace again; the
    requests come from the cache). One teacher for both roles fingerprints as it did before roles."""
    translator, reasoner = roles["translator"], roles["reasoner"]
    teachers = [translator] if translator == reasoner else [translator, reasoner]
    return stable_id(
        *(part for t in teachers for part in (t.model, repr((t.temperature, t.top_p, t.max_tokens)))),
        synth.prompt_version,
        str(seed),
        repr(synth.min_language_share),
    )


def expand_seed(
    seed: SeedRow, languages: Sequence[str], synth: SynthConfig, recipe_fp: str, recipe_seed: int
) -> list[SynthTask]:
    """Every trace task of one seed: its original, one whole trace per language, its mixed traces."""
    tasks: list[SynthTask] = []
    targets = [code for code in languages if code != SOURCE_LANGUAGE]
    content = stable_id(seed.model_dump_json())

    def task(kind: TraceKind, langs: list[str], index: int = 0) -> SynthTask:
        trace_id = stable_id(seed.id, content, kind, str(index), ",".join(langs), recipe_fp)
        return SynthTask(id=trace_id, kind=kind, index=index, languages=langs, seed=seed)

    if "original" in synth.kinds:
        tasks.append(task("original", [SOURCE_LANGUAGE]))
    if "whole" in synth.kinds:
        tasks.extend(task("whole", [code]) for code in targets)  # English is the original itself
    if "mixed" in synth.kinds:
        fragments = len(segment(seed.cot))
        for index in range(synth.mixed_per_seed):
            rng = random.Random(f"{recipe_seed}/{seed.id}/{index}")
            langs = plan_languages(fragments, targets, synth.p_switch, synth.language_weights, rng)
            tasks.append(task("mixed", langs, index))
    return tasks


def plan_languages(
    fragments: int,
    targets: Sequence[str],
    p_switch: float,
    weights: dict[str, float] | None,
    rng: random.Random,
) -> list[str]:
    """The language of each fragment.

    The first stays English; each later one is translated with probability ``p_switch`` into a
    target other than the previous fragment's language (weighted or uniform; a language missing from
    ``weights`` is never drawn). A fragment that is not translated, or has no target left, stays
    English.
    """
    langs = [SOURCE_LANGUAGE] * min(fragments, 1)
    for _ in range(1, fragments):
        choices = [
            code for code in targets if code != langs[-1] and (not weights or weights.get(code, 0) > 0)
        ]
        if choices and rng.random() < p_switch:
            w = [weights[code] for code in choices] if weights else None
            langs.append(rng.choices(choices, weights=w)[0])
        else:
            langs.append(SOURCE_LANGUAGE)
    return langs


def group_tasks(tasks: list[SynthTask], max_group: int) -> list[list[SynthTask]]:
    r"""Tasks that would send an identical request, in one group: one actor runs a group, and its
    client sends a request only once however many of its tasks need it.

    Actors do not share their response caches while a run lasts, so two tasks that need the same
    request (a seed's mixed plans translating the same fragment into the same language, a question
    two seeds share) would each pay for it on different actors. A seed's tasks always stay together;
    groups of different seeds merge over a shared request while the merged group holds at most
    ``max_group`` tasks, so one very common fragment cannot pull every task onto one actor (such a
    request may then be sent once per group that needs it).

    >>> seed = SeedRow(id="s", source="t", question="1+1?", cot="So 2.\n\nWait, yes.", answer="2")
    >>> tasks = expand_seed(seed, ["zh"], SynthConfig(mixed_per_seed=2, p_switch=1.0), "fp", 0)
    >>> [len(group) for group in group_tasks(tasks, max_group=8)]
    [4]
    """
    parent = list(range(len(tasks)))
    size = [1] * len(tasks)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def merge(i: int, j: int, capped: bool) -> None:
        a, b = root(i), root(j)
        if a != b and (not capped or size[a] + size[b] <= max_group):
            parent[b], size[a] = a, size[a] + size[b]

    first_of_seed: dict[str, int] = {}
    first_of_request: dict[str, int] = {}
    for i, task in enumerate(tasks):
        merge(first_of_seed.setdefault(task.seed_id, i), i, capped=False)
        for key in request_keys(task):
            merge(first_of_request.setdefault(key, i), i, capped=True)
    groups: dict[int, list[SynthTask]] = {}
    for i, task in enumerate(tasks):
        groups.setdefault(root(i), []).append(task)
    return list(groups.values())


def request_keys(task: SynthTask) -> list[str]:
    """The requests a task sends that are known before it runs (the messages themselves)."""
    if task.kind == "whole":
        return [json.dumps(translate_question_messages(task.seed.question, task.languages[0]))]
    if task.kind == "mixed":
        return [json.dumps(messages) for _, _, messages in fragment_requests(task.seed, task.languages)]
    return []


def fragment_requests(seed: SeedRow, langs: list[str]) -> list[tuple[int, str, list[Message]]]:
    """A mixed plan's translation requests: ``(fragment index, language, messages)`` for every
    fragment the plan switches out of English."""
    fragments = segment(seed.cot)
    return [
        (index, code, translate_fragment_messages(fragments[index], code))
        for index, code in enumerate(langs)
        if code != SOURCE_LANGUAGE
    ]


@dataclass(frozen=True)
class PlannedRequest:
    """One request a task sends: its role, messages and source text (what a translation renders;
    for a solve the seed's CoT, the nearest thing to what it will write). ``pending``: a solve whose
    question translation is not known yet, listed with the English question in its place."""

    role: Role
    messages: list[Message]
    source: str
    pending: bool = False

    def estimated_tokens(self, max_tokens: int) -> tuple[int, int]:
        """``(prompt, completion)`` tokens before the endpoint counts them: the prompt from its text;
        a translation's completion ``TRANSLATION_GROWTH`` × its source, a solve's the seed's own CoT,
        capped at ``max_tokens``."""
        prompt = sum(estimate_tokens(m["content"]) + MESSAGE_OVERHEAD for m in self.messages)
        source = estimate_tokens(self.source)
        completion = source if self.role == "reasoner" else int(source * TRANSLATION_GROWTH) + 1
        return prompt, min(completion, max_tokens)


def task_requests(
    task: SynthTask, translation: Callable[[list[Message]], str | None]
) -> list[PlannedRequest]:
    """The requests of ``task``; ``translation(messages)`` is the known reply to a question
    translation (or ``None``), which decides a whole trace's solve request."""
    seed = task.seed
    if task.kind == "whole":
        lang = task.languages[0]
        question = translate_question_messages(seed.question, lang)
        translated = translation(question)
        solve = solve_messages(
            parse_translation(translated) if translated is not None else seed.question, lang
        )
        return [
            PlannedRequest("translator", question, seed.question),
            PlannedRequest("reasoner", solve, seed.final_response() + seed.cot, pending=translated is None),
        ]
    if task.kind == "mixed":
        fragments = segment(seed.cot)
        return [
            PlannedRequest("translator", messages, fragments[index])
            for index, _, messages in fragment_requests(seed, task.languages)
        ]
    return []
