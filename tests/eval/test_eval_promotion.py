"""Eval-gated promotion in the MLflow registry: the sqlite store and the session's ``mlflow server``
behind its auth app on PostgreSQL.

Each version is evaluated for real (`run_eval` over HTTP against a local chat server whose answers
depend on the requested model version): v1 thinks long and answers right, v2 thinks short and answers
right (better), v3 thinks long and answers wrong (worse), v4 is evaluated with other sampling settings.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from evalkit import completion, make_recipe, mini_answers, question_of, register_versions
from mlflow import MlflowClient
from registry_support import gate_summary

from l2ray.decode.types import Completion
from l2ray.eval.api import promote, run_eval
from l2ray.eval.metrics import score_sample, summarise
from l2ray.eval.mlflow_log import EVAL_RUN_TAG, log_evaluation
from l2ray.eval.promotion import CHAMPION, DECISION_TAG, REASONS_TAG, PromotionError, decide
from l2ray.mlflow_store import mlflow_client
from l2ray.recipe import PromotionGate
from l2ray.student.model_ref import ModelRef

MODEL = "l2ray-eval-test"
GATE = {"max_accuracy_drop": 0.0, "min_thinking_token_reduction": 0.2}
# version -> (words of thinking, answers right)
BEHAVIOUR = {"1": (30, True), "2": (8, True), "3": (30, False), "4": (8, True)}


def _server_behaviour(body: dict) -> tuple[int, dict]:
    answers = mini_answers()
    words, right = BEHAVIOUR[body["model"].rsplit("/", 1)[1]]
    gold = answers[question_of(body)]
    answer = gold if right else f"{gold}+1"
    return 200, completion(" ".join(["think"] * words) + f"</think>\n\nSo \\boxed{{{answer}}}.")


def _evaluate_all(recipe, server) -> dict[str, dict]:
    summaries = {}
    for version in ("1", "2", "3"):
        summaries[version] = run_eval(
            recipe, model=f"models:/{MODEL}/{version}", endpoint=server.base_url
        ).summary
    other = recipe.model_copy(update={"eval": recipe.eval.model_copy(update={"max_tokens": 64})})
    summaries["4"] = run_eval(other, model=f"models:/{MODEL}/4", endpoint=server.base_url).summary
    return summaries


def _check_promotion_flow(recipe, client: MlflowClient) -> None:
    first = promote(recipe, "1")
    assert first.outcome == "promoted" and first.champion_before is None
    assert "no champion yet" in first.reasons[0]
    assert str(client.get_model_version_by_alias(MODEL, CHAMPION).version) == "1"

    client.set_registered_model_alias(MODEL, "candidate", "2")
    better = promote(recipe)  # the default candidate is the `candidate` alias
    assert (better.outcome, better.candidate, better.champion_before) == ("promoted", "2", "1")
    assert str(client.get_model_version_by_alias(MODEL, CHAMPION).version) == "2"

    worse = promote(recipe, "3")
    assert worse.outcome == "rejected"
    assert any("accuracy 0.000 vs champion 1.000" in r and r.endswith("FAIL") for r in worse.reasons)
    assert str(client.get_model_version_by_alias(MODEL, CHAMPION).version) == "2"

    mismatched = promote(recipe, "4")
    assert mismatched.outcome == "refused" and "sampling" in mismatched.reasons[0]
    assert str(client.get_model_version_by_alias(MODEL, CHAMPION).version) == "2"

    tags = {v: client.get_model_version(MODEL, v).tags for v in ("1", "2", "3", "4")}
    assert [tags[v][DECISION_TAG] for v in ("1", "2", "3", "4")] == [
        "promoted",
        "promoted",
        "rejected",
        "refused",
    ]
    assert "FAIL" in tags["3"][REASONS_TAG] and "differ" in tags["4"][REASONS_TAG]
    assert tags["2"]["l2ray.promotion.champion_before"] == "1"

    again = promote(recipe, "2")
    assert again.outcome == "refused" and "already the champion" in again.reasons[0]
    assert client.get_model_version(MODEL, "2").tags[DECISION_TAG] == "promoted"  # its record stays
    with pytest.raises(PromotionError, match="'nope'"):
        promote(recipe, "nope")


@pytest.mark.slow
def test_promotion_on_sqlite_and_on_the_authenticated_postgres_server(
    auth_mlflow, ray_cluster, student_path, tmp_path: Path, chat_server
) -> None:
    # The server lists every version, so each evaluation asks for its own (`served_model_id`).
    server = chat_server(_server_behaviour, models=tuple(f"models:/{MODEL}/{v}" for v in BEHAVIOUR))
    eval_fields = {"limit": 3, "max_tokens": 48, "concurrency": 4, "gate": GATE}

    # sqlite store: every version evaluated for real, then the promotion flow.
    recipe = make_recipe(tmp_path / "sqlite", student_path, **eval_fields)
    register_versions(recipe.tracking_uri, MODEL, 4, tmp_path / "sqlite")
    summaries = _evaluate_all(recipe, server)
    client = mlflow_client(recipe.tracking_uri)
    assert client.get_model_version(MODEL, "2").tags[EVAL_RUN_TAG]
    metrics = {v: s["results"]["mini"]["off"] for v, s in summaries.items()}
    assert metrics["2"]["thinking_tokens"]["mean"] < 0.8 * metrics["1"]["thinking_tokens"]["mean"]
    assert (metrics["1"]["accuracy"], metrics["3"]["accuracy"]) == (1.0, 0.0)
    _check_promotion_flow(recipe, client)

    # The session's authenticated server (it came up meanwhile): the same evaluations logged
    # through its REST API and artifact proxy, as the session's MLflow user.
    url = auth_mlflow.ready()
    remote = make_recipe(tmp_path / "remote", student_path, tracking_uri=url, **eval_fields)
    register_versions(url, MODEL, 4, tmp_path / "remote")
    for version, summary in summaries.items():
        ref = ModelRef(f"models:/{MODEL}/{version}", MODEL, version)
        log_evaluation(remote, recipe.run_dir / "eval" / summary["label"], summary, ref)
    _check_promotion_flow(remote, mlflow_client(url))


def test_gate_arithmetic() -> None:
    gate = PromotionGate(max_accuracy_drop=0.02, min_thinking_token_reduction=0.1)
    assert decide(gate_summary(0.49, 90.0), gate_summary(0.5, 100.0), gate)[0] == "promoted"
    assert (
        decide(gate_summary(0.47, 50.0), gate_summary(0.5, 100.0), gate)[0] == "rejected"
    )  # accuracy fell too far
    assert (
        decide(gate_summary(0.6, 91.0), gate_summary(0.5, 100.0), gate)[0] == "rejected"
    )  # only 9 % fewer tokens
    assert decide(gate_summary(0.6, 91.0), None, gate)[0] == "promoted"


def _scored(thinking: dict[str, int | None], right: set[str]) -> dict:
    """A ``summary.json`` from really scored samples: problem -> words of thinking (``None``: it failed)."""
    rows, generations = [], []
    for problem, words in thinking.items():
        rows.append(
            {
                "benchmark": "mini",
                "problem_id": problem,
                "sample": 0,
                "configuration": "off",
                "question": "What is 2 + 2?",
                "gold": "4",
                "answer_type": "integer",
            }
        )
        answer = "4" if problem in right else "5"
        text = " ".join(["hm"] * (words or 0)) + f"</think>\n\nSo \\boxed{{{answer}}}."
        failed = Completion(None, error="TimeoutError: timed out")
        generations.append(failed if words is None else Completion(text, "stop"))
    records = [score_sample(r, g, str.split) for r, g in zip(rows, generations, strict=True)]
    return {
        "comparable_hash": "h",
        "fingerprint": {"configurations": {"off": {}}},
        "results": summarise(records),
    }


# The champion answers p0 and p1 right after short thinking and p2, p3 wrong after long thinking.
CHAMPION_RUN = _scored({"p0": 30, "p1": 30, "p2": 100, "p3": 100}, right={"p0", "p1"})


def test_a_candidate_cheaper_only_by_failing_is_rejected_for_its_failures() -> None:
    # The candidate's long generations time out: as accurate (failures count wrong), and on what it
    # answered its mean thinking is 20 words against the champion's 65.
    candidate = _scored({"p0": 20, "p1": 20, "p2": None, "p3": None}, right={"p0", "p1"})
    ours, theirs = candidate["results"]["mini"]["off"], CHAMPION_RUN["results"]["mini"]["off"]
    assert (ours["accuracy"], theirs["accuracy"]) == (0.5, 0.5)
    assert (ours["thinking_tokens"]["mean"], theirs["thinking_tokens"]["mean"]) == (20.0, 65.0)

    gate = PromotionGate(min_thinking_token_reduction=0.2)
    outcome, reasons = decide(candidate, CHAMPION_RUN, gate)
    assert outcome == "rejected"
    [failures] = [r for r in reasons if "failure rate" in r]
    assert failures == (
        "mini/off: failure rate 0.500 vs champion 0.000 (may be up to the champion's or 0.000): FAIL"
    )
    # Its tokens are compared on the two problems both answered: 20 against 30, not against 65.
    [tokens] = [r for r in reasons if "thinking tokens" in r]
    assert tokens.startswith("mini/off: mean thinking tokens 20.0 vs champion 30.0 on the 2 of 4 problems")
    assert tokens.endswith(": ok")

    # Failures the recipe tolerates let the same candidate through.
    tolerant = PromotionGate(min_thinking_token_reduction=0.2, max_failure_rate=0.5)
    assert decide(candidate, CHAMPION_RUN, tolerant)[0] == "promoted"


def test_thinking_tokens_are_compared_on_the_problems_neither_side_failed() -> None:
    # 28 words against the champion's mean of 65 would be 57 % fewer; on the same problems it is 7 %.
    candidate = _scored({"p0": 28, "p1": 28, "p2": None, "p3": None}, right={"p0", "p1"})
    gate = PromotionGate(min_thinking_token_reduction=0.2, max_failure_rate=0.5)
    outcome, reasons = decide(candidate, CHAMPION_RUN, gate)
    assert outcome == "rejected"
    assert any(r.startswith("mini/off: mean thinking tokens 28.0 vs champion 30.0") for r in reasons)
    assert [r.rsplit(": ", 1)[1] for r in reasons] == ["ok", "ok", "FAIL"]

    # A problem the champion failed on leaves both sides too, and failing as often as it is no fault.
    champion = _scored({"p0": 30, "p1": 30, "p2": 100, "p3": None}, right={"p0", "p1"})
    candidate = _scored({"p0": 20, "p1": 20, "p2": 70, "p3": None}, right={"p0", "p1"})
    outcome, reasons = decide(candidate, champion, PromotionGate(min_thinking_token_reduction=0.2))
    assert outcome == "promoted"
    assert any("mean thinking tokens 36.7 vs champion 53.3 on the 3 of 4 problems" in r for r in reasons)


def test_a_first_champion_must_stay_within_the_failure_rate() -> None:
    candidate = _scored({"p0": 20, "p1": None}, right={"p0"})
    outcome, reasons = decide(candidate, None, PromotionGate())
    assert outcome == "rejected" and "no champion yet" in reasons[0]
    assert reasons[1] == "mini/off: failure rate 0.500 (may be up to 0.000): FAIL"
    assert decide(candidate, None, PromotionGate(max_failure_rate=0.5))[0] == "promoted"
    # Nothing answered is never promoted, whatever the tolerance.
    silent = _scored({"p0": None, "p1": None}, right=set())
    outcome, reasons = decide(silent, None, PromotionGate(max_failure_rate=1.0))
    assert outcome == "rejected" and "every request failed" in reasons[1]


def test_an_evaluation_without_per_problem_tokens_is_refused() -> None:
    old = _scored({"p0": 30, "p1": 30}, right={"p0"})
    del old["results"]["mini"]["off"]["thinking_tokens_by_problem"]  # what an older l2ray wrote
    outcome, reasons = decide(_scored({"p0": 20, "p1": 20}, right={"p0"}), old, PromotionGate())
    assert outcome == "refused" and "evaluate both versions again" in reasons[0]
