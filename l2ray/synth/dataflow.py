"""The Ray Data pipeline: trace tasks → teacher actor pool → assemble + verify → rows on the driver.

    tasks ─ group_tasks ─ from_items
          ─▶ map_batches(TeacherWorker, ActorPoolStrategy(size=actors), num_cpus=actor_cpus)
          ─▶ map_batches(Verifier, ActorPoolStrategy(size=verify_actors), num_cpus=verify_cpus)
          ─▶ iter_batches on the driver

The driver streams the verified rows out as they finish and writes each batch as Parquet shards
(`l2ray.synth.output.SynthOutput`), so a killed run keeps everything that was finished, and the
response cache keeps every finished request.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import ray

from l2ray.grading import grade_answer
from l2ray.recipe import Role, SynthConfig
from l2ray.synth.assemble import assemble
from l2ray.synth.task import SynthTask, group_row
from l2ray.synth.task_plan import group_tasks
from l2ray.synth.worker import TeacherWorker
from l2ray.teacher.cache import CacheEntry
from l2ray.teacher.client import RoleSetup
from l2ray.text import detect_segment_language


def run_tasks(
    tasks: list[SynthTask],
    setups: dict[Role, RoleSetup],
    synth: SynthConfig,
    recorded: list[CacheEntry],
) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Yield ``(accepted rows, rejected rows)`` per finished batch, in completion order
    (``setups``: role → what its client in every teacher actor is built from)."""
    if not tasks:
        return
    context = ray.data.DataContext.get_current()
    bars = context.enable_progress_bars
    context.enable_progress_bars = not synth.progress  # the driver draws its own when asked to
    try:
        yield from _execute(tasks, setups, synth, recorded)
    finally:
        context.enable_progress_bars = bars


class Verifier:
    """Ray Data UDF: worker output rows → ``{"status", "row"}`` (the row as JSON).

    An actor, not a task: grading imports math-verify (sympy) and language ID loads its model, which
    costs seconds per process; a small warm pool pays that once.
    """

    def __init__(self, min_language_share: float, grades: bool = True) -> None:
        self.min_language_share = min_language_share
        # Load the language-ID model now, while the teacher actors wait on their first replies, not
        # when the first batch is already queued here; math-verify (sympy: seconds of CPU that the
        # teacher actors starting beside it would wait for) only when the run grades whole traces.
        detect_segment_language("Une phrase en français pour charger le modèle.")
        if grades:
            grade_answer("$\\boxed{1}$", "1")

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        statuses, rows = [], []
        for task, outcome in zip(batch["task"], batch["outcome"], strict=True):
            status, row = assemble(SynthTask.from_row(task), json.loads(outcome), self.min_language_share)
            statuses.append(status)
            rows.append(json.dumps(row, ensure_ascii=False))
        return {"status": statuses, "row": rows}


def _execute(
    tasks: list[SynthTask],
    setups: dict[Role, RoleSetup],
    synth: SynthConfig,
    recorded: list[CacheEntry],
) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    # Tasks that share a request run on one actor (its client sends the request once).
    groups = group_tasks(tasks, max_group=max(64, math.ceil(len(tasks) / (synth.actors * 8))))
    rows = [group_row(group) for group in groups]
    blocks = max(1, min(len(rows), max(synth.actors * 8, len(rows) // synth.batch_size)))
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    ds = ds.map_batches(
        TeacherWorker,
        fn_constructor_kwargs={
            "setups": setups,
            "prompt_version": synth.prompt_version,
            "recorded": recorded,
            "rate_share": synth.actors,
        },
        # Several blocks at once per actor: they share its event loop and concurrency bound, so a
        # block's slowest request never leaves the actor idle.
        compute=ray.data.ActorPoolStrategy(size=synth.actors, max_concurrent_calls_per_actor=4),
        batch_size=synth.batch_size,
        num_cpus=synth.actor_cpus,
        num_gpus=synth.actor_gpus,
    )
    ds = ds.map_batches(
        Verifier,
        fn_constructor_kwargs={
            "min_language_share": synth.min_language_share,
            "grades": any(task.kind == "whole" for task in tasks),
        },
        compute=ray.data.ActorPoolStrategy(size=synth.verify_actors),
        batch_size=synth.batch_size,
        num_cpus=synth.verify_cpus,
    )
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        accepted, rejected = [], []
        for status, row in zip(batch["status"], batch["row"], strict=True):
            (accepted if status == "accepted" else rejected).append(json.loads(row))
        yield accepted, rejected
