"""Synthesis as a function: ``synthesize(recipe)`` and ``translate_questions(recipe, questions, lang)``.

Example:
    >>> from l2ray.config import recipe_from_dict
    >>> result = synthesize(recipe_from_dict({"name": "demo"}))  # doctest: +SKIP
    >>> result.summary["rows_by_kind"]  # doctest: +SKIP
    {'original': 10, 'whole': 40, 'mixed': 10}

Every seed is accounted for: its traces are in ``synth/traces``, its rejected traces (with the
reason) in ``synth/rejected``, and a malformed seed row (``seeds.on_error: skip``) in
``synth/failures.jsonl``. A rerun of a finished or killed run skips the traces that exist and sends
no request whose reply is cached.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from l2ray.cluster import ensure_ray
from l2ray.config import Recipe
from l2ray.data.seeds import SeedRow, load_seeds
from l2ray.errors import L2rayError
from l2ray.synth.output import SynthOutput, table_counts, usage_totals
from l2ray.synth.plan import expand_seed, fragment_requests, recipe_fingerprint
from l2ray.synth.prompts import (
    parse_translation,
    solve_messages,
    translate_question_messages,
)
from l2ray.synth.recorded import RecordedLoad, load_recorded
from l2ray.teacher.base import Usage
from l2ray.teacher.cache import ResponseCache
from l2ray.teacher.client import TeacherClient, build_teacher

MAX_LISTED = 20


class SynthResult(BaseModel):
    """Where a synthesis run wrote its tables, and its summary (also in ``summary.json``)."""

    run_dir: Path
    traces_dir: Path
    rejected_dir: Path
    preview_path: Path
    summary_path: Path
    summary: dict[str, Any]


class MissingResponsesError(L2rayError, RuntimeError):
    """Requests that are neither cached nor recorded while no teacher endpoint is configured."""

    def __init__(self, missing: list[str], problems: list[str], key_env: str) -> None:
        listed = "\n".join(f"  - {m}" for m in missing[:MAX_LISTED])
        more = f"\n  … and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        notes = "".join(f"\n  note: {p}" for p in problems[:MAX_LISTED])
        super().__init__(
            f"{len(missing)} teacher request(s) are not in the cache or the recorded content, and "
            f"teacher.base_url is not set:\n{listed}{more}{notes}\nSet teacher.base_url (with the API key "
            f"in ${key_env}) or teacher.kind=transformers to generate them, or add recorded content."
        )
        self.missing = missing


def synthesize(recipe: Recipe) -> SynthResult:
    """Run (or resume) synthesis for ``recipe`` on the current Ray cluster (started if needed)."""
    from l2ray.synth.pipeline import run_tasks

    started = time.perf_counter()
    out = SynthOutput(recipe.run_dir)
    loaded = load_seeds(recipe.seeds)
    loaded.write_failures(out.failures_path)
    fingerprint = recipe_fingerprint(recipe.teacher, recipe.synth, recipe.seed)
    tasks = [
        task
        for seed in loaded.rows
        for task in expand_seed(seed, recipe.languages, recipe.synth, fingerprint, recipe.seed)
    ]
    finished = out.finished_ids()
    todo = [task for task in tasks if task["id"] not in finished]
    recorded = _recorded(recipe, loaded.rows)
    cache_dir = _cache_dir(recipe)
    if todo and not _has_teacher(recipe):
        client = TeacherClient(
            None, ResponseCache(cache_dir, recorded.entries), recipe.teacher, _version(recipe)
        )
        missing = _missing_requests(todo, client)
        if missing:
            raise MissingResponsesError(missing, recorded.problems, recipe.teacher.api_key_env)
    usages: list[str] = []
    if todo:
        ensure_ray()
        with _Progress(len(todo), recipe.synth.progress) as progress:
            for accepted, rejected in run_tasks(
                todo, recipe.teacher, recipe.synth, cache_dir, recorded.entries
            ):
                out.write("traces", accepted)
                out.write("rejected", rejected)
                usages.extend(row["usage"] for row in (*accepted, *rejected))
                progress.advance(len(accepted), len(rejected))
    out.consolidate_rejected()
    out.write_preview(recipe.synth.preview_rows)
    summary = _summary(recipe, out, loaded.rows, len(loaded.failures), len(tasks), len(todo), usages)
    summary["wall_time_s"] = round(time.perf_counter() - started, 3)
    out.write_summary(summary)
    return SynthResult(
        run_dir=recipe.run_dir,
        traces_dir=out.traces_dir,
        rejected_dir=out.rejected_dir,
        preview_path=out.preview_path,
        summary_path=out.summary_path,
        summary=summary,
    )


def translate_questions(recipe: Recipe, questions: list[str], lang: str) -> list[str]:
    """Translate ``questions`` into ``lang`` with synthesis's prompt and response cache (no Ray)."""
    seeds = load_seeds(recipe.seeds.model_copy(update={"on_error": "skip"})).rows
    recorded = _recorded(recipe, seeds, [lang])
    teacher = build_teacher(recipe.teacher)
    cache = ResponseCache(_cache_dir(recipe), recorded.entries)
    client = TeacherClient(teacher, cache, recipe.teacher, _version(recipe))
    conversations = [translate_question_messages(q, lang) for q in questions]
    if teacher is None:
        missing = [
            f"question {i} into {lang}: {q[:60]!r}"
            for i, (q, msgs) in enumerate(zip(questions, conversations, strict=True))
            if client.cached(msgs) is None
        ]
        if missing:
            raise MissingResponsesError(missing, recorded.problems, recipe.teacher.api_key_env)

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


# --- helpers ---------------------------------------------------------------------------------------


def _version(recipe: Recipe) -> str:
    return recipe.synth.prompt_version


def _cache_dir(recipe: Recipe) -> str:
    return str(
        Path(recipe.teacher.cache_dir).resolve()
        if recipe.teacher.cache_dir
        else recipe.run_dir / "teacher_cache"
    )


def _has_teacher(recipe: Recipe) -> bool:
    return recipe.teacher.kind in ("transformers", "python") or bool(recipe.teacher.base_url)


def _recorded(recipe: Recipe, seeds: list[SeedRow], languages: list[str] | None = None) -> RecordedLoad:
    if not recipe.teacher.use_recorded:
        return RecordedLoad()
    return load_recorded(
        seeds, recipe.teacher, _version(recipe), languages or recipe.languages, recipe.teacher.recorded_dir
    )


def _missing_requests(tasks: list[dict[str, Any]], client: TeacherClient) -> list[str]:
    """Describe every request the tasks need that the cache cannot answer (a whole trace whose
    question translation is missing lists only that: its solve request depends on it)."""
    missing: list[str] = []
    for task in tasks:
        seed = SeedRow.model_validate_json(task["seed"])
        langs = json.loads(task["languages"])
        if task["kind"] == "whole":
            question = client.cached(translate_question_messages(seed.question, langs[0]))
            if question is None:
                missing.append(f"seed {seed.id}: question translation into {langs[0]}")
            elif client.cached(solve_messages(parse_translation(question.text), langs[0])) is None:
                missing.append(f"seed {seed.id}: whole reasoning in {langs[0]}")
        elif task["kind"] == "mixed":
            for index, code, messages in fragment_requests(seed, langs):
                if client.cached(messages) is None:
                    missing.append(f"seed {seed.id}: fragment {index} into {code} (mixed #{task['index']})")
    return list(dict.fromkeys(missing))


def _summary(
    recipe: Recipe,
    out: SynthOutput,
    seeds: list[SeedRow],
    failed_seeds: int,
    tasks: int,
    ran: int,
    usages: list[str],
) -> dict[str, Any]:
    traces = out.read("traces", ["seed_id", "kind", "languages"])
    rejected = out.read("rejected", ["seed_id", "kind", "reason"])
    covered = set(traces["seed_id"].to_pylist()) | set(rejected["seed_id"].to_pylist())
    totals = usage_totals(usages)
    spent = Usage(totals["sent_prompt_tokens"], totals["sent_completion_tokens"])
    return {
        "name": recipe.name,
        "teacher": {
            "kind": recipe.teacher.kind,
            "model": recipe.teacher.model,
            "base_url": recipe.teacher.base_url,
        },
        "seeds": {
            "loaded": len(seeds),
            "failed": failed_seeds,
            "without_rows": sorted(s.id for s in seeds if s.id not in covered),
        },
        "tasks": {"planned": tasks, "run": ran, "skipped_existing": tasks - ran},
        **table_counts(traces, rejected),
        "this_run": {
            **totals,
            "requests_sent": totals["requests"] - totals["cache_hits"],
            "cost": round(spent.cost(recipe.teacher), 6),
        },
    }


class _Progress:
    """A rich progress bar of finished tasks on the driver (or nothing, when disabled)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.accepted = self.rejected = 0
        self._bar: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("synthesizing"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("[green]{task.fields[ok]} ok[/] [red]{task.fields[bad]} rejected[/]"),
                TimeElapsedColumn(),
            )
            self._bar.start()
            self._task = self._bar.add_task("synth", total=self.total, ok=0, bad=0)
        return self

    def advance(self, accepted: int, rejected: int) -> None:
        self.accepted += accepted
        self.rejected += rejected
        if self._bar is not None:
            self._bar.update(self._task, advance=accepted + rejected, ok=self.accepted, bad=self.rejected)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
