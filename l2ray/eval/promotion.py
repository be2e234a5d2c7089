"""`l2ray promote`: move the ``champion`` alias to a candidate version when it passes the eval gate.

Both versions must have been evaluated the same way (`l2ray eval` on ``models:/NAME/V`` tags the
version with its evaluation run; equal ``comparable_hash`` = same data, sampling, configurations,
engine kind, prompt and grader). Otherwise promotion refuses. The gate (``recipe.eval.gate``), per
benchmark on one configuration: accuracy not lower than the champion's by more than
``max_accuracy_drop``, and mean thinking tokens lower by at least ``min_thinking_token_reduction``.
With no champion yet, an evaluated candidate without failed requests becomes champion. The decision
and its reasons are tags on the candidate version.

Example:
    >>> decision = promote(recipe, "candidate")  # doctest: +SKIP
    >>> decision.outcome, decision.reasons[0]  # doctest: +SKIP
    ('promoted', 'mini/off: accuracy 0.400 vs champion 0.350 (may drop 0.010): ok')
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from l2ray.eval.config import PromotionGate

if TYPE_CHECKING:
    from l2ray.config import Recipe

CHAMPION = "champion"
DECISION_TAG = "l2ray.promotion.decision"
REASONS_TAG = "l2ray.promotion.reasons"
CHAMPION_BEFORE_TAG = "l2ray.promotion.champion_before"
TIME_TAG = "l2ray.promotion.time"

Outcome = Literal["promoted", "rejected", "refused"]


@dataclass
class Decision:
    """What promotion decided for one candidate, and why."""

    model_name: str
    candidate: str
    champion_before: str | None
    outcome: Outcome
    reasons: list[str] = field(default_factory=list)

    @property
    def promoted(self) -> bool:
        return self.outcome == "promoted"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    candidate: dict[str, Any], champion: dict[str, Any] | None, gate: PromotionGate
) -> tuple[Outcome, list[str]]:
    """Apply the gate to two ``summary.json`` dicts (pure; see the module docstring)."""
    if champion is None:
        failed = [
            f"{b}/{c}: {m['failures']} failed requests"
            for b, cs in candidate["results"].items()
            for c, m in cs.items()
            if m["failures"]
        ]
        if failed:
            return "rejected", ["no champion yet, but the evaluation has failures: " + "; ".join(failed)]
        return "promoted", [
            "no champion yet: the first evaluated candidate without failures becomes champion"
        ]
    if candidate["comparable_hash"] != champion["comparable_hash"]:
        return "refused", [
            "the evaluations differ (comparable fingerprint "
            f"{candidate['comparable_hash']} vs champion {champion['comparable_hash']}): "
            + _fingerprint_diff(candidate["fingerprint"], champion["fingerprint"])
            + ". Evaluate both versions with the same recipe.eval."
        ]
    configuration = gate.configuration or next(iter(candidate["fingerprint"]["configurations"]))
    reasons: list[str] = []
    passed = True
    for benchmark, configurations in candidate["results"].items():
        if configuration not in configurations:
            return "refused", [f"configuration {configuration!r} is not in the evaluation of {benchmark}"]
        ours, theirs = configurations[configuration], champion["results"][benchmark][configuration]
        where = f"{benchmark}/{configuration}"
        acc_ok = ours["accuracy"] >= theirs["accuracy"] - gate.max_accuracy_drop - 1e-12
        reasons.append(
            f"{where}: accuracy {ours['accuracy']:.3f} vs champion {theirs['accuracy']:.3f} "
            f"(may drop {gate.max_accuracy_drop:.3f}): {'ok' if acc_ok else 'FAIL'}"
        )
        mine, best = ours["thinking_tokens"]["mean"], theirs["thinking_tokens"]["mean"]
        if mine is None or best is None:
            tok_ok = False
            reasons.append(f"{where}: no thinking tokens to compare (every request failed): FAIL")
        else:
            limit = best * (1.0 - gate.min_thinking_token_reduction)
            tok_ok = mine <= limit + 1e-9
            reduction = (1.0 - mine / best) if best else 0.0
            reasons.append(
                f"{where}: mean thinking tokens {mine:.1f} vs champion {best:.1f} ({reduction:+.1%} less, "
                f"needs >= {gate.min_thinking_token_reduction:.1%}): {'ok' if tok_ok else 'FAIL'}"
            )
        passed = passed and acc_ok and tok_ok
    return ("promoted" if passed else "rejected"), reasons


def promote(recipe: Recipe, candidate: str = "candidate", tracking_uri: str | None = None) -> Decision:
    """Compare ``candidate`` (a version number or an alias) with the champion and record the decision.

    Raises:
        PromotionError: the model or version does not exist.
    """
    from mlflow.exceptions import MlflowException

    from l2ray.eval.tracking import load_version_evaluation, registry_client

    uri = tracking_uri or recipe.tracking_uri
    client = registry_client(uri)
    name = recipe.registered_model_name
    try:
        version = str(
            client.get_model_version(name, candidate).version
            if candidate.isdigit()
            else client.get_model_version_by_alias(name, candidate).version
        )
    except MlflowException as exc:
        raise PromotionError(f"candidate {candidate!r} of model {name!r} at {uri}: {exc.message}") from None
    try:
        champion: str | None = str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        champion = None
    decision = Decision(name, version, champion, "refused")
    evaluation = load_version_evaluation(client, uri, name, version)
    if champion == version:
        decision.reasons = [f"version {version} is already the champion"]
    elif evaluation is None:
        decision.reasons = [_not_evaluated(name, version)]
    else:
        champion_eval = load_version_evaluation(client, uri, name, champion) if champion else None
        if champion and champion_eval is None:
            decision.reasons = [f"the champion has no evaluation: {_not_evaluated(name, champion)}"]
        else:
            decision.outcome, decision.reasons = decide(evaluation, champion_eval, recipe.eval.gate)
    if decision.promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    for key, value in {
        DECISION_TAG: decision.outcome,
        REASONS_TAG: " | ".join(decision.reasons)[:4900],  # MLflow caps tag values
        CHAMPION_BEFORE_TAG: champion or "none",
        TIME_TAG: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }.items():
        client.set_model_version_tag(name, version, key, value)
    return decision


class PromotionError(ValueError):
    """A candidate that cannot be looked up (unknown model, version or alias)."""


def _not_evaluated(name: str, version: str) -> str:
    return f"version {version} has no evaluation; run: l2ray eval --set eval.model=models:/{name}/{version}"


def _fingerprint_diff(ours: dict[str, Any], theirs: dict[str, Any]) -> str:
    keys = sorted(k for k in set(ours) | set(theirs) if k != "model" and ours.get(k) != theirs.get(k))
    return "differing " + ", ".join(keys) if keys else "differing fingerprints"


__all__ = ["CHAMPION", "DECISION_TAG", "REASONS_TAG", "Decision", "PromotionError", "decide", "promote"]
