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
    >>> from l2ray.teacher.config import TeacherConfig
    >>> loaded = load_recorded(load_seeds().rows, TeacherConfig(), "v1", ["zh"])
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
from l2ray.synth.prompts import (
    parse_translation,
    solve_messages,
    translate_fragment_messages,
    translate_question_messages,
)
from l2ray.teacher.base import Message, SamplingParams, request_fingerprint
from l2ray.teacher.cache import CacheEntry
from l2ray.teacher.config import TeacherConfig
from l2ray.text import segment

RECORDED_MODEL = "l2ray-recorded-teacher"


@dataclass
class RecordedLoad:
    """Cache entries made from recorded content, and every line or file that could not be used."""

    entries: list[CacheEntry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def load_recorded(
    seeds: Sequence[SeedRow],
    teacher: TeacherConfig,
    prompt_version: str,
    languages: Sequence[str],
    directory: str | Path | None = None,
) -> RecordedLoad:
    """Cache entries for ``seeds`` in ``languages`` from ``directory`` (default: the bundled files)."""
    result = RecordedLoad()
    if teacher.model != RECORDED_MODEL:
        return result
    folder = Path(directory) if directory is not None else bundled_file("recorded")
    by_id = {seed.id: seed for seed in seeds}
    params = SamplingParams.from_config(teacher)

    def entry(messages: list[Message], text: str, meta: dict[str, Any]) -> CacheEntry:
        fingerprint = request_fingerprint(teacher.model, messages, params, prompt_version)
        return CacheEntry(fingerprint, teacher.model, text, meta={**meta, "recorded": True})

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
            where = f"{path}, line {line_no}"
            seed = by_id.get(record.get("seed_id", ""))
            if seed is None:
                continue  # content for a seed this run does not use
            meta = {"seed_id": seed.id, "lang": lang, "kind": record.get("kind")}
            try:
                kind = record["kind"]
                if kind == "question":
                    result.entries.append(
                        entry(translate_question_messages(seed.question, lang), record["text"], meta)
                    )
                elif kind == "whole":
                    if seed.id not in questions:
                        result.problems.append(
                            f"{where}: whole trace without a recorded question for {seed.id}"
                        )
                        continue
                    messages = solve_messages(parse_translation(questions[seed.id]), lang)
                    text = f"<think>\n{record['cot'].strip()}\n</think>\n\n{record['response'].strip()}"
                    result.entries.append(entry(messages, text, meta))
                elif kind == "fragment":
                    fragments = segment(seed.cot)
                    index = int(record["index"])
                    if not 0 <= index < len(fragments) or fragments[index] != record["source"]:
                        result.problems.append(
                            f"{where}: fragment {index} of {seed.id} does not match the seed's CoT"
                        )
                        continue
                    messages = translate_fragment_messages(record["source"], lang)
                    result.entries.append(entry(messages, record["text"], {**meta, "index": index}))
                else:
                    result.problems.append(f"{where}: unknown kind {kind!r}")
            except (KeyError, TypeError, ValueError) as exc:
                result.problems.append(f"{where}: malformed record ({type(exc).__name__}: {exc})")
    return result


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
