"""The promotion gate behind `l2ray promote` (`l2ray.eval.api.promote`): the ``champion`` alias moves
to a candidate version when it passes the eval gate.

Both versions must have been evaluated the same way (`l2ray eval` on ``models:/NAME/V`` tags the
version with its evaluation run; equal ``comparable_hash`` = same data, sampling, seeding,
configurations, engine kind, prompt and grader). Otherwise promotion refuses. The gate
(``recipe.eval.gate``), per benchmark on one configuration:

- accuracy not lower than the champion's by more than ``max_accuracy_drop`` (failures count wrong);
- failures: the candidate's failure rate not above the champion's, unless within ``max_failure_rate``;
- mean thinking tokens lower by at least ``min_thinking_token_reduction``, both means taken over the
  same problems: those neither evaluation failed on.

With no champion yet, an evaluated candidate whose failure rate is within ``max_failure_rate`` (default
0: no failures) becomes champion. The decision, its reasons, the champion it was decided against and
its evidence (each compared evaluation's run id and ``summary.json`` digest) are tags on the candidate
version; `l2ray.eval.api.promote` applies it as a compare-and-set under the model's alias lock.

The candidate is also compared with the model it was trained from (the recipe's ``student.model``),
when that base has an evaluation of the same kind (`load_base_evaluation`; `l2ray run` always makes
one): a student whose accuracy is not above its base's on every benchmark is not promoted, whatever
the champion — fine-tuning that taught nothing is not a new model.

Example:
    >>> outcome, reasons = decide(candidate_summary, champion_summary, PromotionGate())  # doctest: +SKIP
    >>> outcome, reasons[0]  # doctest: +SKIP
    ('promoted', 'mini/off: accuracy 0.400 vs champion 0.350 (may drop 0.010): ok')
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from l2ray.errors import L2rayError
from l2ray.eval.mlflow_log import Evaluation
from l2ray.recipe import PromotionGate

CHAMPION = "champion"
DECISION_TAG = "l2ray.promotion.decision"
REASONS_TAG = "l2ray.promotion.reasons"
CHAMPION_BEFORE_TAG = "l2ray.promotion.champion_before"
EVIDENCE_TAG = "l2ray.promotion.evidence"
TIME_TAG = "l2ray.promotion.time"
ROLLED_BACK_TAG = "l2ray.promotion.rolled_back"

Outcome = Literal["promoted", "rejected", "refused", "rolled_back"]


@dataclass
class Decision:
    """What promotion decided for one candidate, and why."""

    model_name: str
    candidate: str
    champion_before: str | None
    outcome: Outcome
    reasons: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    """``{"candidate" | "champion" | "base": {"eval_run_id", "summary_sha256"}}``: what was compared."""

    @property
    def promoted(self) -> bool:
        return self.outcome == "promoted"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    candidate: dict[str, Any],
    champion: dict[str, Any] | None,
    gate: PromotionGate,
    base: dict[str, Any] | None = None,
) -> tuple[Outcome, list[str]]:
    """Apply the gate (`champion_gate`), then, given the base's evaluation, `base_check`."""
    outcome, reasons = champion_gate(candidate, champion, gate)
    if base is None or outcome == "refused":
        return outcome, reasons
    configuration = gate.configuration or next(iter(candidate["fingerprint"]["configurations"]))
    better, base_reasons = base_check(candidate, base, configuration)
    if better is None:
        return "refused", reasons + base_reasons
    return (outcome if better else "rejected"), reasons + base_reasons


def base_check(
    candidate: dict[str, Any], base: dict[str, Any], configuration: str
) -> tuple[bool | None, list[str]]:
    """Is the candidate more accurate than its base on every benchmark? ``None``: not comparable."""
    if candidate["comparable_hash"] != base["comparable_hash"]:
        return None, [
            f"the base's evaluation differs (comparable fingerprint {base['comparable_hash']} vs "
            f"{candidate['comparable_hash']}): "
            + _fingerprint_diff(candidate["fingerprint"], base["fingerprint"])
            + ". Evaluate the base with the same recipe.eval."
        ]
    reasons, better = [], True
    for benchmark, configurations in candidate["results"].items():
        ours = configurations[configuration]["accuracy"]
        theirs = base["results"].get(benchmark, {}).get(configuration, {}).get("accuracy")
        if theirs is None:
            return None, [f"the base's evaluation has no {benchmark}/{configuration}"]
        ok = ours > theirs + 1e-12
        better = better and ok
        reasons.append(
            f"{benchmark}/{configuration}: accuracy {ours:.3f} vs base {theirs:.3f} "
            f"(must be higher): {_verdict(ok)}"
        )
    return better, reasons


def champion_gate(
    candidate: dict[str, Any], champion: dict[str, Any] | None, gate: PromotionGate
) -> tuple[Outcome, list[str]]:
    """Apply the gate to two ``summary.json`` dicts (pure).

    Why failures are gated and tokens paired: a failed request (a timeout, a 5xx) has no text, so it
    is left out of the mean thinking tokens. A candidate whose long generations time out would look
    cheaper by failing, so (1) it may not fail more often than the champion — beyond the noise
    ``max_failure_rate`` tolerates — and (2) the token means of both sides are taken over the same
    problems: a problem that failed (in any sample) on either side is left out of both. Accuracy needs
    no pairing: failures already count as wrong answers in it.

    Outcomes: ``refused`` when the evaluations cannot be compared (different fingerprints, the gated
    configuration missing, no per-problem tokens), ``rejected`` when the gate fails, else ``promoted``.
    """
    configuration = gate.configuration or next(iter(candidate["fingerprint"]["configurations"]))
    missing = [b for b, cs in candidate["results"].items() if configuration not in cs]
    if missing:
        return "refused", [f"configuration {configuration!r} is not in the evaluation of {missing[0]}"]
    if champion is None:
        return _first_champion(candidate, configuration, gate)
    if candidate["comparable_hash"] != champion["comparable_hash"]:
        return "refused", [
            "the evaluations differ (comparable fingerprint "
            f"{candidate['comparable_hash']} vs champion {champion['comparable_hash']}): "
            + _fingerprint_diff(candidate["fingerprint"], champion["fingerprint"])
            + ". Evaluate both versions with the same recipe.eval."
        ]
    reasons: list[str] = []
    passed = True
    for benchmark, configurations in candidate["results"].items():
        ours, theirs = configurations[configuration], champion["results"][benchmark][configuration]
        where = f"{benchmark}/{configuration}"
        paired = _paired_thinking(ours, theirs)
        if paired is None:
            return "refused", [
                f"{where}: an evaluation has no per-problem thinking tokens (written by an older l2ray); "
                "evaluate both versions again with l2ray eval"
            ]
        fail_ok, fail_reason = _failure_check(where, ours["failure_rate"], theirs["failure_rate"], gate)
        acc_ok = ours["accuracy"] >= theirs["accuracy"] - gate.max_accuracy_drop - 1e-12
        acc_reason = (
            f"{where}: accuracy {ours['accuracy']:.3f} vs champion {theirs['accuracy']:.3f} "
            f"(may drop {gate.max_accuracy_drop:.3f}): {_verdict(acc_ok)}"
        )
        tok_ok, tok_reason = _token_check(where, paired, gate)
        reasons += [acc_reason, fail_reason, tok_reason]  # accuracy first, as it always was
        passed = passed and fail_ok and acc_ok and tok_ok
    return ("promoted" if passed else "rejected"), reasons


def _first_champion(
    candidate: dict[str, Any], configuration: str, gate: PromotionGate
) -> tuple[Outcome, list[str]]:
    """With nothing to compare against, only the failure rate decides (the gate's other rules are
    relative to a champion)."""
    checks = [
        _failure_check(f"{benchmark}/{configuration}", results[configuration]["failure_rate"], None, gate)
        for benchmark, results in candidate["results"].items()
    ]
    reasons = ["no champion yet: the first evaluated candidate within max_failure_rate becomes champion"]
    reasons += [reason for _, reason in checks]
    return ("promoted" if all(ok for ok, _ in checks) else "rejected"), reasons


def _failure_check(where: str, ours: float, theirs: float | None, gate: PromotionGate) -> tuple[bool, str]:
    """The candidate may fail as often as the champion, or up to ``max_failure_rate``; never always."""
    allowed = max(theirs or 0.0, gate.max_failure_rate)
    ok = ours <= allowed + 1e-12 and ours < 1.0  # with nothing answered there is nothing to promote
    if theirs is None:
        rule = f"may be up to {gate.max_failure_rate:.3f}"
    else:
        rule = f"may be up to the champion's or {gate.max_failure_rate:.3f}"
    against = "" if theirs is None else f" vs champion {theirs:.3f}"
    always = ", every request failed" if ours >= 1.0 else ""
    return ok, f"{where}: failure rate {ours:.3f}{against} ({rule}{always}): {_verdict(ok)}"


@dataclass(frozen=True)
class PairedTokens:
    """Thinking tokens of both versions on the problems neither failed on (every sample of them)."""

    problems: int
    """Problems compared."""
    of: int
    """Problems the candidate was evaluated on."""
    ours: list[int]
    theirs: list[int]


def _paired_thinking(ours: dict[str, Any], theirs: dict[str, Any]) -> PairedTokens | None:
    """`PairedTokens` of one benchmark × configuration; ``None`` when an evaluation predates
    ``thinking_tokens_by_problem``."""
    mine, best = ours.get("thinking_tokens_by_problem"), theirs.get("thinking_tokens_by_problem")
    if mine is None or best is None:
        return None
    shared = [
        problem
        for problem, tokens in mine.items()
        if problem in best and None not in tokens and None not in best[problem]
    ]
    return PairedTokens(
        len(shared), len(mine), [t for p in shared for t in mine[p]], [t for p in shared for t in best[p]]
    )


def _token_check(where: str, paired: PairedTokens, gate: PromotionGate) -> tuple[bool, str]:
    """Mean thinking tokens over the same problems on both sides, lower by the gate's reduction."""
    if not paired.ours or not paired.theirs:
        return False, f"{where}: no problem answered by both versions, no thinking tokens to compare: FAIL"
    mine, best = statistics.fmean(paired.ours), statistics.fmean(paired.theirs)
    ok = mine <= best * (1.0 - gate.min_thinking_token_reduction) + 1e-9
    reduction = (1.0 - mine / best) if best else 0.0
    return ok, (
        f"{where}: mean thinking tokens {mine:.1f} vs champion {best:.1f} on the {paired.problems} of "
        f"{paired.of} problems neither failed ({reduction:+.1%} less, needs >= "
        f"{gate.min_thinking_token_reduction:.1%}): {_verdict(ok)}"
    )


def _verdict(ok: bool) -> str:
    return "ok" if ok else "FAIL"


def load_base_evaluation(
    client: Any, tracking_uri: str, experiment: str, base_uri: str, comparable_hash: str
) -> Evaluation | None:
    """The latest ``eval`` run of ``base_uri`` in ``experiment`` that is comparable
    (``comparable_hash``) with the candidate's; ``None`` when there is none."""
    from l2ray.eval.mlflow_log import EVAL_HASH_TAG, STAGE_TAG, download_evaluation

    found = client.get_experiment_by_name(experiment)
    if found is None or '"' in base_uri:  # MLflow's filter strings cannot quote a double quote
        return None
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=(
            f'params.model_uri = "{base_uri}" and tags.`{STAGE_TAG}` = "eval" '
            f'and tags.`{EVAL_HASH_TAG}` = "{comparable_hash}"'
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return download_evaluation(tracking_uri, runs[0].info.run_id) if runs else None


def decision_tags(decision: Decision, when: str) -> dict[str, str]:
    """The tags a decision leaves on the candidate version: outcome, reasons, the champion it was
    decided against (and replaced, when promoted) and its evidence."""
    return {
        DECISION_TAG: decision.outcome,
        REASONS_TAG: " | ".join(decision.reasons)[:4900],  # MLflow caps tag values
        CHAMPION_BEFORE_TAG: decision.champion_before or "none",
        EVIDENCE_TAG: json.dumps(decision.evidence, sort_keys=True),
        TIME_TAG: when,
    }


class PromotionError(L2rayError, ValueError):
    """A candidate that cannot be looked up (unknown model, version or alias)."""


def not_evaluated(name: str, version: str) -> str:
    """Why a version cannot be compared, and the command that fixes it."""
    return f"version {version} has no evaluation; run: l2ray eval --set eval.model=models:/{name}/{version}"


def _fingerprint_diff(ours: dict[str, Any], theirs: dict[str, Any]) -> str:
    keys = sorted(k for k in set(ours) | set(theirs) if k != "model" and ours.get(k) != theirs.get(k))
    return "differing " + ", ".join(keys) if keys else "differing fingerprints"


__all__ = [
    "CHAMPION",
    "CHAMPION_BEFORE_TAG",
    "DECISION_TAG",
    "EVIDENCE_TAG",
    "REASONS_TAG",
    "ROLLED_BACK_TAG",
    "Decision",
    "PromotionError",
    "base_check",
    "champion_gate",
    "decide",
    "decision_tags",
    "load_base_evaluation",
    "not_evaluated",
]
