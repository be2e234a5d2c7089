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
import logging
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
from l2ray.synth.plan import expand_seed, fragment_requests, recipe_fingerprint, task_requests
from l2ray.synth.prompts import (
    parse_translation,
    solve_messages,
    translate_question_messages,
)
from l2ray.synth.recorded import RecordedLoad, load_recorded
from l2ray.synth.task import SynthTask
from l2ray.teacher.base import Message, Secret, require_key
from l2ray.teacher.batch import BatchReport, BatchRequest, run_batch
from l2ray.teacher.cache import ResponseCache
from l2ray.teacher.client import (
    BUDGET_REASON,
    BudgetSoFar,
    RoleClients,
    RoleSetup,
    TeacherClient,
    build_teacher,
)
from l2ray.teacher.config import ROLES, Role, TeacherConfig
from l2ray.teacher.prices import price_of

MAX_LISTED = 20
log = logging.getLogger("l2ray.synth")


class SynthResult(BaseModel):
    """Where a synthesis run wrote its tables, and its summary (also in ``summary.json``)."""

    run_dir: Path
    traces_dir: Path
    rejected_dir: Path
    preview_path: Path
    summary_path: Path
    summary: dict[str, Any]


class MissingResponsesError(L2rayError, RuntimeError):
    """Requests that are neither cached nor recorded while their role has no teacher endpoint."""

    def __init__(self, missing: list[str], problems: list[str], section: str) -> None:
        listed = "\n".join(f"  - {m}" for m in missing[:MAX_LISTED])
        more = f"\n  … and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        notes = "".join(f"\n  note: {p}" for p in problems[:MAX_LISTED])
        super().__init__(
            f"{len(missing)} teacher request(s) are not in the cache or the recorded content, and "
            f"{section}.base_url is not set:\n{listed}{more}{notes}\nSet {section}.base_url (with its "
            f"api_key_env) or {section}.kind=transformers to generate them, or add recorded content."
        )
        self.missing = missing


def synthesize(recipe: Recipe) -> SynthResult:
    """Run (or resume) synthesis for ``recipe`` on the current Ray cluster (started if needed)."""
    from l2ray.synth.pipeline import run_tasks

    started = time.perf_counter()
    out = SynthOutput(recipe.run_dir)
    loaded = load_seeds(recipe.seeds)
    loaded.write_failures(out.failures_path)
    tasks = plan_tasks(recipe, loaded.rows)
    finished = out.finished_ids()
    todo = [task for task in tasks if task.id not in finished]
    recorded = recorded_content(recipe, loaded.rows)
    roles = recipe.teacher_roles
    # Keys are needed only to send: a finished run reruns (summary, preview) without them.
    keys = {
        role: require_key(config, _section(recipe, role)) if todo else None for role, config in roles.items()
    }
    if todo:
        _check_offline_roles(recipe, todo, recorded)
    batches = asyncio.run(_run_batches(recipe, todo, recorded, keys)) if todo else {}
    usages: list[tuple[str, str]] = []
    if todo:
        ensure_ray()
        with _Progress(len(todo), recipe.synth.progress) as progress:
            so_far = {
                role: BudgetSoFar(_batch_cost(roles[role], report), frozenset(report.held_back))
                for role, report in batches.items()
            }
            setups = role_setups(recipe, keys, so_far)
            for accepted, rejected in run_tasks(todo, setups, recipe.synth, recorded.entries):
                out.write("traces", accepted)
                out.write("rejected", rejected)
                usages.extend((row["kind"], row["usage"]) for row in (*accepted, *rejected))
                progress.advance(len(accepted), len(rejected))
    out.consolidate_rejected()
    out.write_preview(recipe.synth.preview_rows)
    summary = _summary(recipe, out, loaded.rows, len(loaded.failures), len(tasks), len(todo), usages)
    _add_batch_costs(recipe, summary, batches)
    summary["wall_time_s"] = round(time.perf_counter() - started, 3)
    out.write_summary(summary)
    if summary["this_run"]["stopped_by_budget"]:
        log.warning("%s", summary["this_run"]["budget_note"])
    return SynthResult(
        run_dir=recipe.run_dir,
        traces_dir=out.traces_dir,
        rejected_dir=out.rejected_dir,
        preview_path=out.preview_path,
        summary_path=out.summary_path,
        summary=summary,
    )


def plan_tasks(recipe: Recipe, seeds: list[SeedRow]) -> list[SynthTask]:
    """Every trace task of ``seeds`` under ``recipe`` (ids include the recipe fingerprint)."""
    fingerprint = recipe_fingerprint(recipe.teacher_roles, recipe.synth, recipe.seed)
    return [
        task
        for seed in seeds
        for task in expand_seed(seed, recipe.languages, recipe.synth, fingerprint, recipe.seed)
    ]


def translate_questions(recipe: Recipe, questions: list[str], lang: str) -> list[str]:
    """Translate ``questions`` into ``lang`` with synthesis's prompt, translator and cache (no Ray)."""
    seeds = load_seeds(recipe.seeds.model_copy(update={"on_error": "skip"})).rows
    recorded = recorded_content(recipe, seeds, [lang])
    config = recipe.teacher_roles["translator"]
    section = _section(recipe, "translator")
    teacher = build_teacher(config, api_key=require_key(config, section))
    cache = ResponseCache(cache_dirs(recipe)["translator"], recorded.entries)
    client = TeacherClient(teacher, cache, config, _version(recipe))
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


def cache_dirs(recipe: Recipe) -> dict[Role, str]:
    """Role → response cache folder (``cache_dir`` of its section, default ``<run dir>/teacher_cache``)."""
    return {
        role: str(Path(config.cache_dir).resolve() if config.cache_dir else recipe.run_dir / "teacher_cache")
        for role, config in recipe.teacher_roles.items()
    }


def role_setups(
    recipe: Recipe,
    keys: dict[Role, Secret | None] | None = None,
    so_far: dict[Role, BudgetSoFar] | None = None,
) -> dict[Role, RoleSetup]:
    """Role → what its clients are built from: its section, its cache folder (`cache_dirs`), the
    driver's key and the batch stage's account of its budget (none given: cache lookups only)."""
    folders, keys, so_far = cache_dirs(recipe), keys or {}, so_far or {}
    return {
        role: RoleSetup(config, folders[role], keys.get(role), so_far.get(role, BudgetSoFar()))
        for role, config in recipe.teacher_roles.items()
    }


# --- helpers ---------------------------------------------------------------------------------------


def _version(recipe: Recipe) -> str:
    return recipe.synth.prompt_version


def _section(recipe: Recipe, role: Role) -> str:
    """Where a role is configured in the recipe, for messages."""
    return f"teachers.{role}" if recipe.teachers is not None else "teacher"


def has_endpoint(config: TeacherConfig) -> bool:
    return config.kind in ("transformers", "vllm", "python") or bool(config.base_url)


def recorded_content(
    recipe: Recipe, seeds: list[SeedRow], languages: list[str] | None = None
) -> RecordedLoad:
    """Cache entries made from the recorded teacher content each role may use."""
    return load_recorded(seeds, recipe.teacher_roles, _version(recipe), languages or recipe.languages)


def _check_offline_roles(recipe: Recipe, todo: list[SynthTask], recorded: RecordedLoad) -> None:
    """Fail before Ray starts when a role without an endpoint lacks cached or recorded replies."""
    offline = [role for role, config in recipe.teacher_roles.items() if not has_endpoint(config)]
    if not offline:
        return
    clients = RoleClients(role_setups(recipe), _version(recipe), recorded=recorded.entries, build=False)
    missing = [m for role, m in missing_requests(todo, clients) if role in offline]
    if missing:
        raise MissingResponsesError(missing, recorded.problems, _section(recipe, offline[0]))


async def _run_batches(
    recipe: Recipe, todo: list[SynthTask], recorded: RecordedLoad, keys: dict[Role, Secret | None]
) -> dict[Role, BatchReport]:
    """Fill the cache through the batch API for the roles with ``batch: true``, before the pipeline:
    translations first, then the solves of the questions now translated. A reasoner in batch mode
    behind a live translator gets its questions translated live here, so one run does it all."""
    roles = recipe.teacher_roles
    if not any(config.batch for config in roles.values()):
        return {}
    clients = RoleClients(role_setups(recipe), _version(recipe), recorded=recorded.entries, build=False)
    reports: dict[Role, BatchReport] = {}
    for role in ROLES:
        client, config = clients.by_role[role], roles[role]
        price = price_of(config)
        wanted = [
            BatchRequest(
                client.fingerprint(r.messages),
                r.messages,
                {"kind": task.kind, "seed_id": task.seed_id},
                price.cost(*r.estimated_tokens(config.max_tokens), batch=True),
            )
            for task in todo
            for r in task_requests(task, translation_of(clients.translator))
            if r.role == role and not r.pending
        ]
        if config.batch:
            # One section serving both roles has one budget: the translations' cost counts for the solves.
            spent = sum(_batch_cost(config, reports[r]) for r in reports if clients.by_role[r] is client)
            reports[role] = await run_batch(config, client.cache, wanted, client.params, keys[role], spent)
        elif role == "translator" and roles["reasoner"].batch:
            reports[role] = await _ask_live(config, clients.translator, wanted, keys[role])
    await clients.aclose()
    return reports


async def _ask_live(
    config: TeacherConfig, cached: TeacherClient, wanted: list[BatchRequest], key: Secret | None
) -> BatchReport:
    """Translate live what batch solves need; what it paid counts in the run's cost and budget."""
    live = TeacherClient(build_teacher(config, api_key=key), cached.cache, config, cached.prompt_version)
    try:
        answers = await asyncio.gather(
            *(live.ask(r.messages, r.meta) for r in wanted), return_exceptions=True
        )
    finally:
        live.sync()
        if live.teacher is not None:
            await live.teacher.aclose()
    report = BatchReport(live=True)
    for request, answer in zip(wanted, answers, strict=True):
        if isinstance(answer, BaseException):
            report.failed[request.fingerprint] = getattr(answer, "reason", type(answer).__name__)
        elif not answer.cached:
            report.answered += 1
            report.prompt_tokens += answer.usage.prompt_tokens
            report.completion_tokens += answer.usage.completion_tokens
    return report


def translation_of(client: TeacherClient) -> Callable[[list[Message]], str | None]:
    """The cached reply to a question translation, or ``None``."""

    def cached(messages: list[Message]) -> str | None:
        answer = client.cached(messages)
        return answer.text if answer is not None else None

    return cached


def missing_requests(tasks: list[SynthTask], clients: RoleClients) -> list[tuple[Role, str]]:
    """``(role, description)`` of every request the tasks need that the cache cannot answer (a whole
    trace whose question translation is missing lists only that: its solve request depends on it)."""
    missing: list[tuple[Role, str]] = []
    for task in tasks:
        seed, langs = task.seed, task.languages
        if task.kind == "whole":
            question = clients.translator.cached(translate_question_messages(seed.question, langs[0]))
            if question is None:
                missing.append(("translator", f"seed {seed.id}: question translation into {langs[0]}"))
            elif clients.reasoner.cached(solve_messages(parse_translation(question.text), langs[0])) is None:
                missing.append(("reasoner", f"seed {seed.id}: whole reasoning in {langs[0]}"))
        elif task.kind == "mixed":
            for index, code, messages in fragment_requests(seed, langs):
                if clients.translator.cached(messages) is None:
                    what = f"seed {seed.id}: fragment {index} into {code} (mixed #{task.index})"
                    missing.append(("translator", what))
    return list(dict.fromkeys(missing))


def _summary(
    recipe: Recipe,
    out: SynthOutput,
    seeds: list[SeedRow],
    failed_seeds: int,
    tasks: int,
    ran: int,
    usages: list[tuple[str, str]],
) -> dict[str, Any]:
    traces = out.read("traces", ["seed_id", "kind", "languages"])
    rejected = out.read("rejected", ["seed_id", "kind", "reason"])
    covered = set(traces["seed_id"].to_pylist()) | set(rejected["seed_id"].to_pylist())
    totals = usage_totals(usages)
    counts = table_counts(traces, rejected)
    over_budget = counts["rejected_by_reason"].get(f"teacher:{BUDGET_REASON}", 0)
    return {
        "name": recipe.name,
        "teachers": {role: _teacher_line(config) for role, config in recipe.teacher_roles.items()},
        "seeds": {
            "loaded": len(seeds),
            "failed": failed_seeds,
            "without_rows": sorted(s.id for s in seeds if s.id not in covered),
        },
        "tasks": {"planned": tasks, "run": ran, "skipped_existing": tasks - ran},
        **counts,
        "this_run": {
            **totals,
            "requests_sent": totals["requests"] - totals["cache_hits"],
            "cost": totals["cost_usd"],
            "stopped_by_budget": over_budget,
            "budget_note": (
                f"max_cost_usd reached: {over_budget} trace(s) were not built; every paid reply is "
                "cached, so raising max_cost_usd and running again resumes where this run stopped"
                if over_budget
                else ""
            ),
        },
    }


def _add_batch_costs(recipe: Recipe, summary: dict[str, Any], batches: dict[Role, BatchReport]) -> None:
    """The batch stage's work this run, per role, with its cost (at the batch price; live translations
    at the live one) added to the run's."""
    lines = {}
    for role, report in batches.items():
        cost = round(_batch_cost(recipe.teacher_roles[role], report), 6)
        lines[role] = {**report.to_dict(), "cost_usd": cost}
        summary["this_run"]["cost"] = round(summary["this_run"]["cost"] + cost, 6)
    summary["batch"] = lines


def _batch_cost(config: TeacherConfig, report: BatchReport) -> float:
    return report.cost(price_of(config))


def _teacher_line(config: TeacherConfig) -> dict[str, Any]:
    price = price_of(config)
    return {
        "kind": config.kind,
        "model": config.model,
        "base_url": config.base_url,
        "price_per_mtok": {
            "input": price.input,
            "output": price.output,
            "known": price.known,
            "as_of": price.as_of,
        },
        "max_cost_usd": config.max_cost_usd,
    }


class _Progress:
    """Finished tasks on the run's display (`l2ray.console.progress`), or a bar of its own."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.accepted = self.rejected = 0

    def __enter__(self) -> _Progress:
        from l2ray.console import progress

        self._context = progress(self.total, "synthesizing", enabled=self.enabled)
        self._bar = self._context.__enter__()
        return self

    def advance(self, accepted: int, rejected: int) -> None:
        self.accepted += accepted
        self.rejected += rejected
        self._bar.advance(accepted + rejected, f"{self.accepted} ok · {self.rejected} rejected")

    def __exit__(self, *exc: object) -> None:
        self._context.__exit__(*exc)
