"""Expand seeds into trace tasks (pure, no Ray): which traces to build and, for mixed ones, which
fragment goes into which language.

A task is a flat dict (one Ray Data row). Its ``id`` is the id of the trace it will become: a hash of
the seed id, the kind, the mixed index, the fragment languages and the recipe fingerprint, so a
rerun recognises finished traces.

Example:
    >>> import random
    >>> plan_languages(4, ["zh", "fr"], p_switch=1.0, weights=None, rng=random.Random(0))
    ['en', 'fr', 'zh', 'fr']
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from l2ray.data.seeds import SeedRow, stable_id
from l2ray.synth.config import SynthConfig
from l2ray.teacher.config import TeacherConfig
from l2ray.text import segment

SOURCE_LANGUAGE = "en"


def recipe_fingerprint(teacher: TeacherConfig, synth: SynthConfig, seed: int) -> str:
    """What makes a trace differ between recipes: teacher model, sampling, prompts and the seed."""
    return stable_id(
        teacher.model,
        repr((teacher.temperature, teacher.top_p, teacher.max_tokens)),
        synth.prompt_version,
        str(seed),
    )


def expand_seed(
    seed: SeedRow, languages: Sequence[str], synth: SynthConfig, recipe_fp: str, recipe_seed: int
) -> list[dict[str, Any]]:
    """Every trace task of one seed: its original, one whole trace per language, its mixed traces."""
    tasks: list[dict[str, Any]] = []
    seed_json = seed.model_dump_json()
    targets = [code for code in languages if code != SOURCE_LANGUAGE]

    def task(kind: str, langs: list[str], index: int = 0) -> dict[str, Any]:
        return {
            "id": stable_id(seed.id, kind, str(index), ",".join(langs), recipe_fp),
            "seed_id": seed.id,
            "kind": kind,
            "index": index,
            "languages": json.dumps(langs),
            "seed": seed_json,
        }

    if "original" in synth.kinds:
        tasks.append(task("original", [SOURCE_LANGUAGE]))
    if "whole" in synth.kinds:
        tasks.extend(task("whole", [code]) for code in languages)
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
