"""Evaluation's entry points: `run_eval` (``l2ray eval``), `run_pilot` (``l2ray pilot``) and
`promote` / `rollback` (``l2ray promote [--rollback]``).

An evaluation builds its task rows (`tasks`: problems × samples × configurations, each with its
prompt and seed), generates and scores them on a Ray Data actor pool (`pool`, `metrics`), records
what was evaluated how (`identity`), writes ``<run_dir>/eval/<label>/`` (`report`) and logs it to
MLflow against the model version when the model came from the registry (`mlflow_log`). Promotion reads
those logged evaluations and applies the gate (`promotion`).

Example:
    >>> result = run_eval(recipe)  # doctest: +SKIP
    >>> result.summary["results"]["mini"]["off"]["accuracy"]  # doctest: +SKIP
    0.0
    >>> pilot = run_pilot(recipe, translate=lambda questions, lang: questions)  # doctest: +SKIP
    >>> promote(recipe, "candidate").outcome  # doctest: +SKIP
    'promoted'
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l2ray.clock import utc_iso
from l2ray.eval.benchmarks import load_benchmark
from l2ray.eval.identity import default_label, eval_fingerprint, eval_seed, evaluation_summary
from l2ray.eval.mlflow_log import Evaluation, load_version_evaluation, log_evaluation
from l2ray.eval.pilot import pilot_dataset, pilot_problems, write_pilot_report
from l2ray.eval.pool import generate_and_score, served_model_for
from l2ray.eval.promotion import (
    CHAMPION,
    CHAMPION_BEFORE_TAG,
    ROLLED_BACK_TAG,
    Decision,
    PromotionError,
    decide,
    decision_tags,
    load_base_evaluation,
    not_evaluated,
)
from l2ray.eval.report import write_report
from l2ray.eval.tasks import task_row
from l2ray.mlflow_store import check_store, mlflow_client, permission_denied
from l2ray.recipe import InterventionConfig, Recipe
from l2ray.registry import alias_lock, alias_version, denied_to_move
from l2ray.student.model_ref import resolve_model

log = logging.getLogger(__name__)

Translate = Callable[[list[str], str], list[str]]
"""``(questions, language) -> the questions in that language`` (synthesis's translator, for one)."""


@dataclass
class EvalResult:
    """What an evaluation wrote and where it was logged."""

    label: str
    out_dir: Path
    summary: dict[str, Any]
    mlflow_run_id: str | None
    model_name: str | None
    model_version: str | None


def run_eval(
    recipe: Recipe, *, label: str | None = None, model: str | None = None, endpoint: str | None = None
) -> EvalResult:
    """Evaluate the recipe's model (or ``model``) on ``recipe.eval`` and write the report.

    Raises:
        BenchmarkError: an unknown benchmark or a dataset without the needed fields.
        EndpointError: the endpoint cannot be reached at all, does not say which model it serves, or
            refused every request (HTTP 4xx) — nothing is logged or tagged then.
    """
    check_store(recipe.tracking_uri)  # the run is logged at the end: refused credentials fail now
    cfg = recipe.eval
    seed = eval_seed(recipe)
    ref = resolve_model(model or cfg.model or recipe.student.model, recipe.tracking_uri)
    endpoint = endpoint or cfg.endpoint
    served = served_model_for(recipe, ref, endpoint)
    datasets = [load_benchmark(b, limit=cfg.limit, seed=seed) for b in cfg.benchmarks]
    rows = [
        task_row(problem, sample, name, problem.question, "en", seed)
        for data in datasets
        for problem in data.problems
        for name in cfg.configurations
        for sample in range(cfg.samples)
    ]
    records = generate_and_score(recipe, rows, dict(cfg.configurations), ref, endpoint, served)
    fingerprint = eval_fingerprint(recipe, ref, endpoint, datasets, seed, cfg.configurations, served)
    label = label or cfg.label or default_label(ref, endpoint)
    summary = evaluation_summary(label, endpoint, fingerprint, records)
    out_dir = recipe.run_dir / "eval" / label
    write_report(out_dir, summary, records)
    run_id = log_evaluation(recipe, out_dir, summary, ref)
    return EvalResult(label, out_dir, summary, run_id, ref.name, ref.version)


def run_pilot(
    recipe: Recipe, translate: Translate, *, label: str = "pilot", model: str | None = None
) -> EvalResult:
    """The paper's pilot study: the seed problems asked in each language (see `l2ray.eval.pilot`).

    ``translate`` turns the English questions into each pilot language; the CLI and the pipeline pass
    synthesis's translator (same prompt, same response cache), so evaluation never imports synthesis.
    """
    check_store(recipe.tracking_uri)
    cfg = recipe.eval
    seed = eval_seed(recipe)
    languages = ["en", *[c for c in (cfg.pilot_languages or recipe.languages) if c != "en"]]
    problems = pilot_problems(recipe)
    questions = {"en": [p.question for p in problems]}
    for lang in languages[1:]:
        questions[lang] = translate(questions["en"], lang)
    ref = resolve_model(model or cfg.model or recipe.student.model, recipe.tracking_uri)
    served = served_model_for(recipe, ref, cfg.endpoint)
    rows = [
        task_row(problem, sample, lang, questions[lang][i], lang, seed)
        for lang in languages
        for i, problem in enumerate(problems)
        for sample in range(cfg.samples)
    ]
    interventions = {lang: InterventionConfig() for lang in languages}
    records = generate_and_score(recipe, rows, interventions, ref, cfg.endpoint, served)
    for record in records:
        record["language"] = record["configuration"]
    data = pilot_dataset(recipe, problems, questions)
    fingerprint = eval_fingerprint(recipe, ref, cfg.endpoint, [data], seed, interventions, served)
    summary = evaluation_summary(label, cfg.endpoint, fingerprint, records)
    out_dir = recipe.run_dir / "eval" / label
    write_pilot_report(recipe, ref.uri, out_dir, summary, records, questions)
    run_id = log_evaluation(recipe, out_dir, summary, ref, stage="pilot")
    return EvalResult(label, out_dir, summary, run_id, ref.name, ref.version)


PROMOTION_ATTEMPTS = 3
"""Decisions one promotion makes before it gives up on a champion that keeps moving."""


def promote(recipe: Recipe, candidate: str = "candidate", tracking_uri: str | None = None) -> Decision:
    """Compare ``candidate`` (a version number or an alias) with the champion and record the decision:
    the ``champion`` alias moves when the gate passes, and the decision is tagged on the candidate.

    One guarded step: the gate decides against the champion it read, then, holding the model's alias
    lock (`l2ray.registry.alias_lock`), the champion is read again and the decision applied only if it
    is still that version (compare-and-set). When another promotion moved it meanwhile, the gate
    decides again against the new champion (`PROMOTION_ATTEMPTS` times at most, then ``refused``).

    Raises:
        PromotionError: the model or version does not exist.
        RegistryPermissionError: the MLflow user may not move the alias or tag the version.
    """
    uri = tracking_uri or recipe.tracking_uri
    client = mlflow_client(uri)
    name = recipe.registered_model_name
    version = _version_of(client, name, candidate, uri)
    champion = alias_version(client, name, CHAMPION)
    moves: list[str] = []
    for _ in range(PROMOTION_ATTEMPTS):
        if champion == version:  # nothing to decide; its tags keep the decision that made it champion
            return Decision(
                name, version, champion, "refused", [*moves, f"version {version} is already the champion"]
            )
        decision = _decide(client, uri, recipe, version, champion)
        decision.reasons = moves + decision.reasons
        log.info("%s version %s vs champion %s: %s", name, version, champion, decision.outcome)
        with alias_lock(client, name):
            now = alias_version(client, name, CHAMPION)
            if now == champion:
                _record(client, decision)
                return decision
        moves.append(f"the champion moved from {champion or 'none'} to {now or 'none'}: decided again")
        champion = now
    gave_up = [*moves, "the champion kept moving; promote again"]
    decision = Decision(name, version, champion, "refused", gave_up)
    with alias_lock(client, name):
        _record(client, decision)
    return decision


def rollback(recipe: Recipe, tracking_uri: str | None = None) -> Decision:
    """Move ``champion`` back to the version the current champion replaced (its
    `CHAMPION_BEFORE_TAG`), under the alias lock; the demoted version gets `ROLLED_BACK_TAG`.

    Raises:
        PromotionError: there is no champion, or it replaced none (it was the first).
    """
    from mlflow.exceptions import MlflowException

    uri = tracking_uri or recipe.tracking_uri
    client = mlflow_client(uri)
    name = recipe.registered_model_name
    with alias_lock(client, name):
        current = alias_version(client, name, CHAMPION)
        if current is None:
            raise PromotionError(f"model {name!r} at {uri} has no champion to roll back")
        previous = client.get_model_version(name, current).tags.get(CHAMPION_BEFORE_TAG, "none")
        if previous == "none":
            raise PromotionError(
                f"champion version {current} of {name!r} replaced no champion (it was the first): nothing "
                f"to roll back to; promote another version instead (l2ray promote --candidate N)"
            )
        note = f"champion moved back from version {current} to version {previous}, the version it replaced"
        try:
            client.set_registered_model_alias(name, CHAMPION, previous)
            client.set_model_version_tag(name, current, ROLLED_BACK_TAG, f"{utc_iso()}: {note}")
        except MlflowException as exc:
            raise (denied_to_move(name, CHAMPION) if permission_denied(exc) else exc) from None
    log.info("%s: %s", name, note)
    return Decision(name, previous, current, "rolled_back", [note])


def _decide(client: Any, uri: str, recipe: Recipe, version: str, champion: str | None) -> Decision:
    """The gate's decision on ``version`` against ``champion`` (read-only), with its evidence."""
    name = recipe.registered_model_name
    decision = Decision(name, version, champion, "refused")
    evaluation = load_version_evaluation(client, uri, name, version)
    if evaluation is None:
        decision.reasons = [not_evaluated(name, version)]
        return decision
    decision.evidence["candidate"] = evaluation.evidence()
    champion_eval = load_version_evaluation(client, uri, name, champion) if champion else None
    if champion and champion_eval is None:
        decision.reasons = [f"the champion has no evaluation: {not_evaluated(name, champion)}"]
        return decision
    if champion_eval is not None:
        decision.evidence["champion"] = champion_eval.evidence()
    base = _base_evaluation(client, uri, recipe, evaluation.summary["comparable_hash"])
    if base is not None:
        decision.evidence["base"] = base.evidence()
    decision.outcome, decision.reasons = decide(
        evaluation.summary,
        champion_eval.summary if champion_eval else None,
        recipe.eval.gate,
        base.summary if base else None,
    )
    if base is None:
        decision.reasons.append(f"the base {recipe.student.model} has no comparable evaluation: not compared")
    return decision


def _record(client: Any, decision: Decision) -> None:
    """Apply a decision (the caller holds the alias lock and checked the champion): move the alias
    when promoted, then tag the candidate with the decision."""
    from mlflow.exceptions import MlflowException

    name, version = decision.model_name, decision.candidate
    try:
        if decision.promoted:
            client.set_registered_model_alias(name, CHAMPION, version)
        for key, value in decision_tags(decision, utc_iso()).items():
            client.set_model_version_tag(name, version, key, value)
    except MlflowException as exc:
        raise (denied_to_move(name, CHAMPION) if permission_denied(exc) else exc) from None


def _base_evaluation(client: Any, uri: str, recipe: Recipe, comparable_hash: str) -> Evaluation | None:
    """The evaluation of the model the candidate was trained from (the recipe's student), if any."""
    base = resolve_model(recipe.student.model, uri).uri
    return load_base_evaluation(client, uri, recipe.experiment_name, base, comparable_hash)


def _version_of(client: Any, name: str, candidate: str, uri: str) -> str:
    """The version number a candidate (a number or an alias) names."""
    from mlflow.exceptions import MlflowException

    try:
        if candidate.isdigit():
            return str(client.get_model_version(name, candidate).version)
        return str(client.get_model_version_by_alias(name, candidate).version)
    except MlflowException as exc:
        raise PromotionError(f"candidate {candidate!r} of model {name!r} at {uri}: {exc.message}") from None


__all__ = ["EvalResult", "Translate", "promote", "rollback", "run_eval", "run_pilot"]
