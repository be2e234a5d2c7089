"""Synthesis as a function: ``synthesize(recipe)``, and ``translate_questions(recipe, questions, lang)``
(from `l2ray.synth.translate`) for the pilot.

Example:
    >>> from l2ray.recipe import recipe_from_dict
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
import logging
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from l2ray.cluster import ensure_ray
from l2ray.data.seeds import SeedRow, load_seeds
from l2ray.recipe import Recipe
from l2ray.synth.batch_stage import batch_cost, run_batches
from l2ray.synth.output import SynthOutput
from l2ray.synth.roles import (
    MissingResponsesError,
    check_offline_roles,
    recorded_content,
    role_setups,
    section_of,
)
from l2ray.synth.summary import Progress, add_batch_costs, synth_summary
from l2ray.synth.task import SynthTask
from l2ray.synth.task_plan import expand_seed, recipe_fingerprint
from l2ray.synth.translate import translate_questions, translator
from l2ray.teacher.base import require_key
from l2ray.teacher.client import BudgetSoFar

log = logging.getLogger("l2ray.synth")


class SynthResult(BaseModel):
    """Where a synthesis run wrote its tables, and its summary (also in ``summary.json``)."""

    run_dir: Path
    traces_dir: Path
    rejected_dir: Path
    preview_path: Path
    summary_path: Path
    summary: dict[str, Any]


def synthesize(recipe: Recipe) -> SynthResult:
    """Run (or resume) synthesis for ``recipe`` on the current Ray cluster (started if needed)."""
    from l2ray.synth.dataflow import run_tasks

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
        role: require_key(config, section_of(recipe, role)) if todo else None
        for role, config in roles.items()
    }
    if todo:
        check_offline_roles(recipe, todo, recorded)
    batches = asyncio.run(run_batches(recipe, todo, recorded, keys)) if todo else {}
    usages: list[tuple[str, str]] = []
    if todo:
        ensure_ray()
        with Progress(len(todo), recipe.synth.progress) as progress:
            so_far = {
                role: BudgetSoFar(batch_cost(roles[role], report), frozenset(report.held_back))
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
    summary = synth_summary(recipe, out, loaded.rows, len(loaded.failures), len(tasks), len(todo), usages)
    add_batch_costs(recipe, summary, batches)
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


__all__ = [
    "MissingResponsesError",
    "SynthResult",
    "plan_tasks",
    "synthesize",
    "translate_questions",
    "translator",
]
