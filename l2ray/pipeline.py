"""The whole L² run: synthesize → train → evaluate base and student → promote → (serve).

Each stage has a fingerprint of everything that decides its output (its recipe sections and the
fingerprints of the stages it reads). ``<run_dir>/pipeline.json`` records the fingerprint and outputs of
every finished stage, so a rerun skips what is done and a run that failed or was killed continues at
the first stage whose record is missing or stale.

Example:
    >>> result = run_pipeline(load_recipe("configs/demo.yaml"))  # doctest: +SKIP
    >>> [s.name for s in result.stages if s.skipped]  # doctest: +SKIP
    []
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from l2ray.clock import utc_iso
from l2ray.config import Recipe
from l2ray.console import LineDisplay, StageDisplay
from l2ray.hashing import stable_id

STATE_FILE = "pipeline.json"
STAGES = ("synth", "train", "eval_base", "eval_student", "promote")
BASE_LABEL = "base"
STUDENT_LABEL = "student"


@dataclass
class StageRecord:
    """One finished stage: its fingerprint, outputs and how long it took."""

    name: str
    fingerprint: str
    outputs: dict[str, Any]
    finished: str
    wall_s: float
    skipped: bool = False


@dataclass
class PipelineResult:
    """The stages of one `run_pipeline` call, in order (skipped ones included)."""

    run_dir: Path
    stages: list[StageRecord] = field(default_factory=list)

    def stage(self, name: str) -> StageRecord:
        return next(s for s in self.stages if s.name == name)


def run_pipeline(
    recipe: Recipe,
    *,
    until: str | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
    display: StageDisplay | None = None,
) -> PipelineResult:
    """Run every stage of ``recipe`` in order, skipping those already done for the same fingerprint.

    Args:
        until: stop after this stage (one of `STAGES`); the next run continues from there.
        force: rerun every stage even when its record matches.
        log: where one plain line per stage event goes (a `LineDisplay`), unless ``display`` is given.
        display: what is told when a stage starts, is skipped, finishes (with `stage_figure`) or fails.
    """
    display = display or LineDisplay(log)
    if until is not None and until not in STAGES:
        raise ValueError(f"until={until!r}: not a stage; stages are {', '.join(STAGES)}")
    recipe.run_dir.mkdir(parents=True, exist_ok=True)
    state = _load_state(recipe.run_dir)
    result = PipelineResult(recipe.run_dir)
    fingerprints = stage_fingerprints(recipe)
    for name in STAGES:
        fingerprint = fingerprints[name]
        previous = state.get(name)
        if not force and previous and previous["fingerprint"] == fingerprint and _outputs_exist(previous):
            record = StageRecord(**{**previous, "skipped": True})
            display.skipped(name, fingerprint)
        else:
            record = _run_stage(recipe, name, fingerprint, state, display)
            state[name] = {k: v for k, v in asdict(record).items() if k != "skipped"}
            _save_state(recipe.run_dir, state)
            display.finished(name, record.wall_s, stage_figure(name, record.outputs))
        result.stages.append(record)
        if name == until:
            break
    write_run_readme(recipe, state)
    return result


def stage_figure(name: str, outputs: dict[str, Any]) -> str:
    """The one figure a person wants when stage ``name`` ends, read from its outputs and summary.

    >>> stage_figure("promote", {"outcome": "promoted", "version": "2"})
    'promoted version 2'
    """
    if name == "promote":
        return f"{outputs['outcome']} version {outputs['version']}"
    summary = json.loads(Path(outputs["summary"]).read_text(encoding="utf-8"))
    if name == "synth":
        by_count = sorted(summary.get("rejected_by_reason", {}).items(), key=lambda item: -item[1])
        reasons = ", ".join(f"{r} {n}" for r, n in by_count)
        return f"{summary['rows']} traces accepted, {summary['rejected']} rejected" + (
            f" ({reasons})" if reasons else ""
        )
    if name == "train":
        return (
            f"loss {summary['final_loss']:.3f} · {summary['steps']} steps · "
            f"{summary['tokens_per_s']:,.0f} tokens/s"
        )
    benchmark, configurations = next(iter(summary["results"].items()))
    configuration, metrics = next(iter(configurations.items()))
    return (
        f"accuracy {metrics['accuracy']:.1%} · {metrics['thinking_tokens']['mean']:.1f} thinking tokens "
        f"({benchmark}/{configuration}; {len(configurations)} configurations)"
    )


def stage_fingerprints(recipe: Recipe) -> dict[str, str]:
    """The fingerprint of every stage: its own recipe sections plus its inputs' fingerprints."""

    def digest(*parts: Any) -> str:
        plain = [p.model_dump(mode="json") if isinstance(p, BaseModel) else p for p in parts]
        return stable_id(json.dumps(plain, sort_keys=True))

    teachers = [recipe.teachers] if recipe.teachers is not None else []  # absent: digests as before roles
    synth = digest(recipe.languages, recipe.seed, recipe.seeds, recipe.teacher, recipe.synth, *teachers)
    train = digest(synth, recipe.student, recipe.train, recipe.tracking_uri, recipe.registered_model_name)
    eval_base = digest(recipe.student.model, recipe.eval, recipe.tracking_uri)
    eval_student = digest(train, recipe.eval)
    promote = digest(eval_student, recipe.eval.gate)
    return {
        "synth": synth,
        "train": train,
        "eval_base": eval_base,
        "eval_student": eval_student,
        "promote": promote,
    }


def write_run_readme(recipe: Recipe, state: dict[str, dict[str, Any]] | None = None) -> Path:
    """Write ``<run_dir>/README.md``: what happened in each stage and where its outputs are."""
    state = state if state is not None else _load_state(recipe.run_dir)
    lines = [f"# Run `{recipe.name}`", "", "| stage | finished | wall time | outputs |", "|---|---|---|---|"]
    for name in STAGES:
        record = state.get(name)
        if record is None:
            lines.append(f"| {name} | not yet | | |")
            continue
        outputs = ", ".join(f"{k}: `{v}`" for k, v in record["outputs"].items() if isinstance(v, str | int))
        lines.append(f"| {name} | {record['finished']} | {record['wall_s']:.1f} s | {outputs} |")
    lines += ["", *_results_section(recipe, state)]
    lines += [
        "",
        "Browse the runs and the model registry with:",
        "",
        f"    mlflow ui --backend-store-uri {recipe.tracking_uri}",
        "",
    ]
    path = recipe.run_dir / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def run_summary(
    recipe: Recipe, result: PipelineResult, commands: dict[str, str] | None = None
) -> dict[str, Any]:
    """What `l2ray run` prints at the end (as a table, or as JSON with ``--json``): each stage's state,
    wall time and figure, base vs student, the promotion, where the outputs are, and ``commands`` plus
    the `mlflow ui` one to look further."""
    state = {s.name: {"outputs": s.outputs} for s in result.stages}
    stages = [
        {
            "name": s.name,
            "state": "skipped" if s.skipped else "done",
            "wall_s": s.wall_s,
            "figure": stage_figure(s.name, s.outputs),
            "outputs": s.outputs,
        }
        for s in result.stages
    ]
    promote = state.get("promote", {}).get("outputs")
    return {
        "run": recipe.name,
        "run_dir": str(result.run_dir),
        "readme": str(result.run_dir / "README.md"),
        "stages": stages,
        "comparison": comparison_rows(state),
        "promotion": None
        if promote is None
        else {"outcome": promote["outcome"], "version": promote["version"]},
        "commands": {"browse": f"mlflow ui --backend-store-uri {recipe.tracking_uri}", **(commands or {})},
    }


COMPARISON_COLUMNS = (
    "model",
    "benchmark",
    "configuration",
    "accuracy",
    "mean thinking",
    "truncation",
    "failures",
)
"""The columns of the base-vs-student table (`comparison_cells` fills them)."""


def comparison_cells(row: dict[str, Any]) -> list[str]:
    """One `comparison_rows` row as the text of `COMPARISON_COLUMNS` (the CLI and the run's README).

    >>> comparison_cells({"model": "base", "benchmark": "mini", "configuration": "off", "accuracy": 0.5,
    ...     "accuracy_se": 0.1, "thinking_tokens": None, "truncation_rate": 0.25, "failures": 0})
    ['base', 'mini', 'off', '0.500 ± 0.100', '–', '0.25', '0']
    """
    tokens = "–" if row["thinking_tokens"] is None else f"{row['thinking_tokens']:.1f}"
    truncation = "–" if row["truncation_rate"] is None else f"{row['truncation_rate']:.2f}"
    return [
        row["model"],
        row["benchmark"],
        row["configuration"],
        f"{row['accuracy']:.3f} ± {row['accuracy_se']:.3f}",
        tokens,
        truncation,
        str(row["failures"]),
    ]


def comparison_rows(state: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Base vs student per benchmark × configuration, from the two evaluation summaries."""
    rows = []
    for label in ("eval_base", "eval_student"):
        record = state.get(label)
        if record is None:
            continue
        summary = json.loads(Path(record["outputs"]["summary"]).read_text())
        for benchmark, configurations in summary["results"].items():
            for configuration, metrics in configurations.items():
                rows.append(
                    {
                        "model": BASE_LABEL if label == "eval_base" else STUDENT_LABEL,
                        "benchmark": benchmark,
                        "configuration": configuration,
                        "accuracy": metrics["accuracy"],
                        "accuracy_se": metrics["accuracy_se"],
                        "thinking_tokens": metrics["thinking_tokens"]["mean"],
                        "answer_tokens": metrics["answer_tokens"]["mean"],
                        "truncation_rate": metrics["truncation_rate"],
                        "failures": metrics["failures"],
                    }
                )
    return rows


# --- stages ------------------------------------------------------------------------------------------


def _run_stage(
    recipe: Recipe, name: str, fingerprint: str, state: dict[str, Any], display: StageDisplay
) -> StageRecord:
    display.started(name, fingerprint)
    started = time.perf_counter()
    try:
        outputs = _RUNNERS[name](recipe, state)
    except BaseException as exc:  # the display says which stage failed; the caller reports the error
        display.failed(name, round(time.perf_counter() - started, 2), exc)
        raise
    return StageRecord(
        name=name,
        fingerprint=fingerprint,
        outputs=outputs,
        finished=utc_iso(),
        wall_s=round(time.perf_counter() - started, 2),
    )


def _synth(recipe: Recipe, state: dict[str, Any]) -> dict[str, Any]:
    from l2ray.synth.api import synthesize

    result = synthesize(recipe)
    return {
        "traces": str(result.traces_dir),
        "rejected": str(result.rejected_dir),
        "summary": str(result.summary_path),
    }


def _train(recipe: Recipe, state: dict[str, Any]) -> dict[str, Any]:
    from l2ray.train.api import train

    result = train(recipe, traces_dir=Path(state["synth"]["outputs"]["traces"]))
    return {
        "model_uri": result.model_uri,
        "version": result.version,
        "run_id": result.run_id,
        "final_loss": result.final_loss,
        "steps": result.steps,
        "summary": str(recipe.run_dir / "train" / "result.json"),
    }


def _evaluate(recipe: Recipe, label: str, model: str) -> dict[str, Any]:
    from l2ray.eval.api import run_eval

    result = run_eval(recipe, label=label, model=model)
    return {
        "model": model,
        "report": str(result.out_dir / "report.md"),
        "summary": str(result.out_dir / "summary.json"),
    }


def _eval_base(recipe: Recipe, state: dict[str, Any]) -> dict[str, Any]:
    return _evaluate(recipe, BASE_LABEL, recipe.student.model)


def _eval_student(recipe: Recipe, state: dict[str, Any]) -> dict[str, Any]:
    return _evaluate(recipe, STUDENT_LABEL, state["train"]["outputs"]["model_uri"])


def _promote(recipe: Recipe, state: dict[str, Any]) -> dict[str, Any]:
    from l2ray.eval.api import promote

    decision = promote(recipe, candidate=str(state["train"]["outputs"]["version"]))
    path = recipe.run_dir / "promotion.json"
    path.write_text(json.dumps(decision.to_dict(), indent=2), encoding="utf-8")
    return {"outcome": decision.outcome, "version": decision.candidate, "summary": str(path)}


_RUNNERS: dict[str, Callable[[Recipe, dict[str, Any]], dict[str, Any]]] = {
    "synth": _synth,
    "train": _train,
    "eval_base": _eval_base,
    "eval_student": _eval_student,
    "promote": _promote,
}


def _results_section(recipe: Recipe, state: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    if "synth" in state:
        summary = json.loads(Path(state["synth"]["outputs"]["summary"]).read_text())
        lines += ["## Synthesis", "", "```json", json.dumps(_synth_digest(summary), indent=2), "```", ""]
    rows = comparison_rows(state)
    if rows:
        lines += [
            "## Evaluation (base vs student)",
            "",
            "| " + " | ".join(COMPARISON_COLUMNS) + " |",
            "|" + "---|" * len(COMPARISON_COLUMNS),
        ]
        lines += ["| " + " | ".join(comparison_cells(r)) + " |" for r in rows]
        for label in ("eval_base", "eval_student"):
            if label in state:
                report = Path(state[label]["outputs"]["report"])
                lines.append(f"\nFull report ({label.removeprefix('eval_')}): [{report.name}]({report})")
    if "promote" in state:
        decision = json.loads(Path(state["promote"]["outputs"]["summary"]).read_text())
        lines += ["", "## Promotion", "", f"**{decision['outcome']}** version {decision['candidate']}:"]
        lines += [f"- {reason}" for reason in decision["reasons"]]
    return lines


def _synth_digest(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("rows", "rows_by_kind", "rows_by_language", "rejected_by_reason", "cache", "tokens", "cost_usd")
    return {k: summary[k] for k in keys if k in summary}


def _outputs_exist(record: dict[str, Any]) -> bool:
    summary = record["outputs"].get("summary")
    return summary is None or Path(summary).exists()


def _load_state(run_dir: Path) -> dict[str, dict[str, Any]]:
    path = run_dir / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _save_state(run_dir: Path, state: dict[str, dict[str, Any]]) -> None:
    tmp = run_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
    tmp.replace(run_dir / STATE_FILE)  # atomic: a kill never leaves half a state file
