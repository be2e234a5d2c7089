"""What a finished run reports: its stages' summary files read into typed models, and those rendered.

The stages write their summaries as JSON — synthesis's ``summary.json``, training's ``result.json``
(`TrainResult`), each evaluation's ``summary.json``, ``promotion.json`` (a promotion `Decision`).
`read_report` reads the ones a run's recorded stage outputs name into a `RunReport`: the one place
they are read back. From it come each stage's key figure (`stage_figure`, the line `l2ray run` shows
when a stage ends), the base-vs-student table (`ComparisonRow`), the results section of the run's
README (`RunReport.readme_section`) and the closing summary of `l2ray run` (`run_summary`: a table
through `print_run_summary`, or JSON with ``--json``).

Example:
    >>> ComparisonRow(model="base", benchmark="mini", configuration="off", accuracy=0.5, accuracy_se=0.1,
    ...     thinking_tokens=None, answer_tokens=4.0, truncation_rate=0.25, failures=0).cells()
    ['base', 'mini', 'off', '0.500 ± 0.100', '–', '0.25', '0']
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, TypeAdapter
from rich import box
from rich.console import Console
from rich.table import Table

from l2ray.eval.promotion import Decision
from l2ray.recipe import Recipe
from l2ray.train.result import TrainResult


class SeedCounts(BaseModel):
    """Synthesis's seeds: how many failed to load."""

    failed: int


class SynthUsage(BaseModel):
    """What one synthesis run asked of its teachers."""

    requests_sent: int
    cache_hits: int
    sent_prompt_tokens: int
    sent_completion_tokens: int
    cost: float


class SynthSummary(BaseModel):
    """Synthesis's ``summary.json``, the fields a report shows (the file holds more)."""

    rows: int
    rows_by_kind: dict[str, int]
    rows_by_language: dict[str, dict[str, int]]
    rejected: int
    rejected_by_reason: dict[str, int]
    seeds: SeedCounts
    this_run: SynthUsage
    wall_time_s: float

    def figure(self) -> str:
        """``12 traces accepted, 2 rejected (wrong_answer 2)``: the most frequent reasons first."""
        by_count = sorted(self.rejected_by_reason.items(), key=lambda item: -item[1])
        reasons = ", ".join(f"{r} {n}" for r, n in by_count)
        return f"{self.rows} traces accepted, {self.rejected} rejected" + (f" ({reasons})" if reasons else "")

    def digest(self) -> dict[str, Any]:
        """The counts the run's README shows."""
        return self.model_dump(include={"rows", "rows_by_kind", "rows_by_language", "rejected_by_reason"})


class TokenCounts(BaseModel):
    """Tokens per answered sample (``None`` when no sample was answered)."""

    mean: float | None


class ConfigurationMetrics(BaseModel):
    """One benchmark × configuration of an evaluation."""

    accuracy: float
    accuracy_se: float
    thinking_tokens: TokenCounts
    answer_tokens: TokenCounts
    truncation_rate: float | None
    failures: int


class EvalSummary(BaseModel):
    """An evaluation's ``summary.json``: metrics by benchmark, then configuration, in the recipe's order."""

    results: dict[str, dict[str, ConfigurationMetrics]]

    def figure(self) -> str:
        """The first benchmark's first configuration, and how many configurations there were."""
        benchmark, configurations = next(iter(self.results.items()))
        configuration, metrics = next(iter(configurations.items()))
        return (
            f"accuracy {metrics.accuracy:.1%} · {metrics.thinking_tokens.mean:.1f} thinking tokens "
            f"({benchmark}/{configuration}; {len(configurations)} configurations)"
        )


class Evaluation(BaseModel):
    """One evaluation stage of a run: its summary and where its report is."""

    summary: EvalSummary
    report: Path


COMPARISON_COLUMNS = (
    "model",
    "benchmark",
    "configuration",
    "accuracy",
    "mean thinking",
    "truncation",
    "failures",
)
"""The columns of the base-vs-student table (`ComparisonRow.cells` fills them)."""


class ComparisonRow(BaseModel):
    """One model × benchmark × configuration of the base-vs-student table."""

    model: str
    benchmark: str
    configuration: str
    accuracy: float
    accuracy_se: float
    thinking_tokens: float | None
    answer_tokens: float | None
    truncation_rate: float | None
    failures: int

    def cells(self) -> list[str]:
        """The row as the text of `COMPARISON_COLUMNS` (the closing summary and the run's README)."""
        tokens = "–" if self.thinking_tokens is None else f"{self.thinking_tokens:.1f}"
        truncation = "–" if self.truncation_rate is None else f"{self.truncation_rate:.2f}"
        accuracy = f"{self.accuracy:.3f} ± {self.accuracy_se:.3f}"
        failures = str(self.failures)
        return [self.model, self.benchmark, self.configuration, accuracy, tokens, truncation, failures]


class RunReport(BaseModel):
    """The summaries of a run's finished stages (a stage not finished yet is absent)."""

    synth: SynthSummary | None = None
    train: TrainResult | None = None
    evaluations: dict[str, Evaluation] = {}
    """By the model evaluated (``base``, ``student``: the stage's name without ``eval_``), in stage order."""
    promotion: Decision | None = None

    def figure(self, stage: str) -> str:
        """The one figure a person wants when ``stage`` ends."""
        evaluation = self.evaluations.get(stage.removeprefix("eval_"))
        if stage == "synth" and self.synth is not None:
            return self.synth.figure()
        if stage == "train" and self.train is not None:
            train = self.train
            return f"loss {train.final_loss:.3f} · {train.steps} steps · {train.tokens_per_s:,.0f} tokens/s"
        if stage == "promote" and self.promotion is not None:
            return f"{self.promotion.outcome} version {self.promotion.candidate}"
        if stage.startswith("eval_") and evaluation is not None:
            return evaluation.summary.figure()
        raise KeyError(f"no summary of stage {stage!r} was read")

    def comparison(self) -> list[ComparisonRow]:
        """Base vs student per benchmark × configuration, from the evaluations' summaries."""
        return [
            ComparisonRow(
                model=model,
                benchmark=benchmark,
                configuration=configuration,
                accuracy=metrics.accuracy,
                accuracy_se=metrics.accuracy_se,
                thinking_tokens=metrics.thinking_tokens.mean,
                answer_tokens=metrics.answer_tokens.mean,
                truncation_rate=metrics.truncation_rate,
                failures=metrics.failures,
            )
            for model, evaluation in self.evaluations.items()
            for benchmark, configurations in evaluation.summary.results.items()
            for configuration, metrics in configurations.items()
        ]

    def readme_section(self) -> list[str]:
        """The results part of the run's README: synthesis counts, base vs student, the promotion."""
        lines = []
        if self.synth is not None:
            lines += ["## Synthesis", "", "```json", json.dumps(self.synth.digest(), indent=2), "```", ""]
        if rows := self.comparison():
            lines += [
                "## Evaluation (base vs student)",
                "",
                "| " + " | ".join(COMPARISON_COLUMNS) + " |",
                "|" + "---|" * len(COMPARISON_COLUMNS),
            ]
            lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
            for model, evaluation in self.evaluations.items():
                report = evaluation.report
                lines.append(f"\nFull report ({model}): [{report.name}]({report})")
        if self.promotion is not None:
            decision = self.promotion
            lines += ["", "## Promotion", "", f"**{decision.outcome}** version {decision.candidate}:"]
            lines += [f"- {reason}" for reason in decision.reasons]
        return lines


class FinishedStage(Protocol):
    """What `run_summary` reads of a stage the pipeline ran or skipped (`l2ray.pipeline.StageRecord`)."""

    name: str
    skipped: bool
    wall_s: float
    outputs: dict[str, Any]


class StageReport(BaseModel):
    """One stage in the closing summary."""

    name: str
    state: Literal["done", "skipped"]
    wall_s: float
    figure: str
    outputs: dict[str, Any]


class Promotion(BaseModel):
    """What the run's promotion decided for the version it trained."""

    outcome: str
    version: str


class Note(BaseModel):
    """A warning or error the run's display showed."""

    level: str
    message: str


class RunSummary(BaseModel):
    """What `l2ray run` prints at the end: as a table (`print_run_summary`), or as JSON with ``--json``."""

    run: str
    run_dir: str
    readme: str
    stages: list[StageReport]
    comparison: list[ComparisonRow]
    promotion: Promotion | None
    commands: dict[str, str]
    """Commands to look further, by what they do (``browse``, ``serve``)."""
    log: str | None = None
    notes: list[Note] = []

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False)


def read_report(outputs: Mapping[str, Mapping[str, Any]]) -> RunReport:
    """The summaries that finished stages' recorded outputs (``{stage: outputs}``, in stage order) name."""
    report = RunReport()
    for stage, recorded in outputs.items():
        summary = json.loads(Path(recorded["summary"]).read_text(encoding="utf-8"))
        if stage == "synth":
            report.synth = SynthSummary.model_validate(summary)
        elif stage == "train":
            report.train = TrainResult.model_validate(summary)
        elif stage == "promote":
            report.promotion = _DECISION.validate_python(summary)
        else:  # eval_base, eval_student
            evaluation = Evaluation(summary=EvalSummary.model_validate(summary), report=recorded["report"])
            report.evaluations[stage.removeprefix("eval_")] = evaluation
    return report


def stage_figure(stage: str, outputs: Mapping[str, Any]) -> str:
    """The one figure a person wants when ``stage`` ends, read from the summary its ``outputs`` name."""
    return read_report({stage: outputs}).figure(stage)


def run_summary(
    recipe: Recipe,
    stages: Sequence[FinishedStage],
    *,
    log: str | None = None,
    notes: Iterable[tuple[str, str]] = (),
) -> RunSummary:
    """The closing summary of a run of ``recipe`` whose pipeline ran or skipped ``stages``: each stage's
    state, wall time and figure, base vs student, the promotion, where the outputs, the ``log`` and the
    README are, the display's ``notes`` and the `mlflow ui` command to look further."""
    report = read_report({s.name: s.outputs for s in stages})
    decision = report.promotion
    promotion = None if decision is None else Promotion(outcome=decision.outcome, version=decision.candidate)
    return RunSummary(
        run=recipe.name,
        run_dir=str(recipe.run_dir),
        readme=str(recipe.run_dir / "README.md"),
        stages=[
            StageReport(
                name=s.name,
                state="skipped" if s.skipped else "done",
                wall_s=s.wall_s,
                figure=report.figure(s.name),
                outputs=s.outputs,
            )
            for s in stages
        ],
        comparison=report.comparison(),
        promotion=promotion,
        commands={"browse": f"mlflow ui --backend-store-uri {recipe.tracking_uri}"},
        log=log,
        notes=[Note(level=level, message=message) for level, message in notes],
    )


def print_run_summary(summary: RunSummary, out: Console) -> None:
    """The closing summary as a table and lines on ``out``; commands are printed whole (never wrapped)."""
    table = Table(title=f"run {summary.run}: base vs student", box=box.SIMPLE_HEAD, show_edge=False)
    for column in COMPARISON_COLUMNS:
        table.add_column(column, no_wrap=True)
    for row in summary.comparison:
        table.add_row(*row.cells())
    if table.row_count:
        out.print(table)
    if summary.promotion:
        out.print(f"promotion: [bold]{summary.promotion.outcome}[/] version {summary.promotion.version}")
    out.print(f"run summary: {summary.readme}", soft_wrap=True, markup=False)
    if summary.log:
        shown = f" ({len(summary.notes)} warnings/errors shown above)" if summary.notes else ""
        out.print(f"full log: {summary.log}{shown}", soft_wrap=True, markup=False)
    labels = {"browse": "browse runs and models", "serve": "serve the champion"}
    for name, command in summary.commands.items():
        out.print(f"{labels.get(name, name)}:")
        out.print(f"  {command}", soft_wrap=True, markup=False)


_DECISION = TypeAdapter(Decision)
"""``promotion.json``: the `Decision` the run's promotion wrote."""


__all__ = [
    "COMPARISON_COLUMNS",
    "ComparisonRow",
    "ConfigurationMetrics",
    "EvalSummary",
    "Evaluation",
    "FinishedStage",
    "Note",
    "Promotion",
    "RunReport",
    "RunSummary",
    "SeedCounts",
    "StageReport",
    "SynthSummary",
    "SynthUsage",
    "TokenCounts",
    "print_run_summary",
    "read_report",
    "run_summary",
    "stage_figure",
]
