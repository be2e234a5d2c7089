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
from l2ray.console import LineDisplay, StageDisplay
from l2ray.hashing import stable_id
from l2ray.recipe import Recipe
from l2ray.run_report import read_report, stage_figure

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
        display: what is told when a stage starts, is skipped, finishes (with its figure,
            `l2ray.run_report.stage_figure`) or fails.
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
    finished = {name: state[name]["outputs"] for name in STAGES if name in state}
    lines += ["", *read_report(finished).readme_section()]
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
