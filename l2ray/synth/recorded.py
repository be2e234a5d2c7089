r"""Recorded teacher content → response-cache entries keyed by the real request fingerprints.

The bundled ``l2ray/data/recorded/<lang>.jsonl`` files hold what a teacher wrote for the bundled
seeds (three kinds of line: ``question``, ``whole``, ``fragment``; see docs/contracts). Turning each
line into the exact request synthesis would send (same prompt, model, sampling parameters, prompt
version) makes the demo synthesize offline through the ordinary cache path. Recorded content only
answers for the model name ``l2ray-recorded-teacher``: a recipe naming a real model gets real
replies. A missing file, an unknown seed or a fragment whose source no longer matches the seed is
skipped and reported in ``problems``; the requests it would have answered stay cache misses.

Example:
    >>> from l2ray.data.seeds import load_seeds
    >>> from l2ray.recipe import Role, TeacherConfig
    >>> one = TeacherConfig()
    >>> loaded = load_recorded(load_seeds().rows, {"translator": one, "reasoner": one}, "v1", ["zh"])
    >>> isinstance(loaded.entries, list)
    True
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l2ray.data.seeds import SeedRow, bundled_file
from l2ray.recipe import Role, TeacherConfig
from l2ray.synth.prompts import (
    parse_translation,
    solve_messages,
    translate_fragment_messages,
    translate_question_messages,
)
from l2ray.teacher.base import Message, SamplingParams, request_fingerprint
from l2ray.teacher.cache import CacheEntry
from l2ray.text import segment
from l2ray.thinking import assistant_turn

RECORDED_MODEL = "l2ray-recorded-teacher"


@dataclass
class RecordedLoad:
    """Cache entries made from recorded content, and every line or file that could not be used."""

    entries: list[CacheEntry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


ROLE_OF_KIND: dict[str, Role] = {"question": "translator", "fragment": "translator", "whole": "reasoner"}


def load_recorded(
    seeds: Sequence[SeedRow],
    roles: dict[Role, TeacherConfig],
    prompt_version: str,
    languages: Sequence[str],
) -> RecordedLoad:
    """Cache entries for ``seeds`` in ``languages``: question and fragment lines answer the
    translator, whole lines the reasoner, each from its role's ``recorded_dir`` (default: the bundled
    files) when that role names the recorded model and ``use_recorded`` is on."""
    result = RecordedLoad()
    wanted: dict[int, tuple[TeacherConfig, set[str]]] = {}
    for kind, role in ROLE_OF_KIND.items():
        config = roles[role]
        if config.use_recorded and config.model == RECORDED_MODEL:
            wanted.setdefault(id(config), (config, set()))[1].add(kind)
    for config, kinds in wanted.values():
        _load_role(result, seeds, config, kinds, prompt_version, languages)
    return result


def _load_role(
    result: RecordedLoad,
    seeds: Sequence[SeedRow],
    teacher: TeacherConfig,
    kinds: set[str],
    prompt_version: str,
    languages: Sequence[str],
) -> None:
    folder = Path(teacher.recorded_dir) if teacher.recorded_dir is not None else bundled_file("recorded")
    by_id = {seed.id: seed for seed in seeds}
    params = SamplingParams.from_config(teacher)
    for lang in languages:
        path = folder / f"{lang}.jsonl"
        if not path.exists():
            result.problems.append(f"{path}: no recorded content for {lang}")
            continue
        records = _read(path, result.problems)
        questions = {
            r.get("seed_id"): r["text"]
            for _, r in records
            if r.get("kind") == "question" and isinstance(r.get("text"), str)
        }
        for line_no, record in records:
            seed = by_id.get(record.get("seed_id", ""))
            if seed is None or record.get("kind") not in kinds:
                continue  # content for a seed this run does not use, or another role's
            where = f"{path}, line {line_no}"
            try:
                found = _request_of(record, seed, lang, questions)
            except (KeyError, TypeError, ValueError) as exc:
                result.problems.append(f"{where}: malformed record ({type(exc).__name__}: {exc})")
                continue
            if isinstance(found, str):
                result.problems.append(f"{where}: {found}")
                continue
            messages, text, meta = found
            fingerprint = request_fingerprint(teacher.model, messages, params, prompt_version)
            result.entries.append(
                CacheEntry(fingerprint, teacher.model, text, meta={**meta, "recorded": True})
            )


def _request_of(
    record: dict[str, Any], seed: SeedRow, lang: str, questions: dict[Any, str]
) -> tuple[list[Message], str, dict[str, Any]] | str:
    """The request a recorded line answers, its reply text and cache meta; or why it cannot be used."""
    kind = record["kind"]
    meta = {"seed_id": seed.id, "lang": lang, "kind": kind}
    if kind == "question":
        return translate_question_messages(seed.question, lang), record["text"], meta
    if kind == "whole":
        if seed.id not in questions:
            return f"whole trace without a recorded question for {seed.id}"
        text = assistant_turn(record["cot"].strip(), record["response"].strip())
        return solve_messages(parse_translation(questions[seed.id]), lang), text, meta
    if kind == "fragment":
        fragments = segment(seed.cot)
        index = int(record["index"])
        if not 0 <= index < len(fragments) or fragments[index] != record["source"]:
            return f"fragment {index} of {seed.id} does not match the seed's CoT"
        messages = translate_fragment_messages(record["source"], lang)
        return messages, record["text"], {**meta, "index": index}
    return f"unknown kind {kind!r}"


def _read(path: Path, problems: list[str]) -> list[tuple[int, dict[str, Any]]]:
    records = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path}, line {line_no}: not valid JSON ({exc.msg})")
            continue
        if isinstance(value, dict):
            records.append((line_no, value))
        else:
            problems.append(f"{path}, line {line_no}: not a JSON object")
    return records
