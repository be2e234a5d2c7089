"""What a synthesis run reports: the finished tasks on the display while it runs (`Progress`), and
after it the summary written to ``summary.json`` (seeds, tasks, rows, tokens, the teachers and their
prices, and the batch stage's work with its cost added to the run's).
"""

from __future__ import annotations

from typing import Any

from l2ray.data.seeds import SeedRow
from l2ray.recipe import Recipe, Role, TeacherConfig
from l2ray.synth.batch_stage import batch_cost
from l2ray.synth.output import SynthOutput, table_counts, usage_totals
from l2ray.teacher.batch import BatchReport
from l2ray.teacher.client import BUDGET_REASON
from l2ray.teacher.prices import price_of


def synth_summary(
    recipe: Recipe,
    out: SynthOutput,
    seeds: list[SeedRow],
    failed_seeds: int,
    tasks: int,
    ran: int,
    usages: list[tuple[str, str]],
) -> dict[str, Any]:
    """The run's summary from the tables in ``out`` and this run's usage (``(kind, usage)`` per row)."""
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


def add_batch_costs(recipe: Recipe, summary: dict[str, Any], batches: dict[Role, BatchReport]) -> None:
    """The batch stage's work this run, per role, with its cost (at the batch price; live translations
    at the live one) added to the run's."""
    lines = {}
    for role, report in batches.items():
        cost = round(batch_cost(recipe.teacher_roles[role], report), 6)
        lines[role] = {**report.to_dict(), "cost_usd": cost}
        summary["this_run"]["cost"] = round(summary["this_run"]["cost"] + cost, 6)
    summary["batch"] = lines


class Progress:
    """Finished tasks on the run's display (`l2ray.console.progress`), or a bar of its own."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.accepted = self.rejected = 0

    def __enter__(self) -> Progress:
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


def _teacher_line(config: TeacherConfig) -> dict[str, Any]:
    price = price_of(config)
    return {
        "kind": config.kind,
        "model": config.model,
        "base_url": config.base_url,
        "price_per_mtok": price.per_mtok(),
        "max_cost_usd": config.max_cost_usd,
    }
