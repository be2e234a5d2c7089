"""Eval-gated promotion in the MLflow registry: sqlite store and a real ``mlflow server`` process.

Each version is evaluated for real (`run_eval` over HTTP against a local chat server whose answers
depend on the requested model version): v1 thinks long and answers right, v2 thinks short and answers
right (better), v3 thinks long and answers wrong (worse), v4 is evaluated with other sampling settings.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from evalkit import completion, make_recipe, mini_answers, question_of, register_versions
from mlflow import MlflowClient

from l2ray.eval.promotion import CHAMPION, DECISION_TAG, REASONS_TAG, PromotionError, decide, promote
from l2ray.eval.runner import ModelRef, run_eval
from l2ray.eval.tracking import EVAL_RUN_TAG, log_evaluation, registry_client

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
    with pytest.raises(PromotionError, match="'nope'"):
        promote(recipe, "nope")


@pytest.mark.slow
def test_promotion_on_sqlite_and_on_a_real_mlflow_server(
    mlflow_server, ray_cluster, student_path, tmp_path: Path, chat_server
) -> None:
    # The server lists every version, so each evaluation asks for its own (`served_model_id`).
    server = chat_server(_server_behaviour, models=tuple(f"models:/{MODEL}/{v}" for v in BEHAVIOUR))
    eval_fields = {"limit": 3, "max_tokens": 48, "concurrency": 4, "gate": GATE}

    # sqlite store: every version evaluated for real, then the promotion flow.
    recipe = make_recipe(tmp_path / "sqlite", student_path, **eval_fields)
    register_versions(recipe.tracking_uri, MODEL, 4, tmp_path / "sqlite")
    summaries = _evaluate_all(recipe, server)
    client = registry_client(recipe.tracking_uri)
    assert client.get_model_version(MODEL, "2").tags[EVAL_RUN_TAG]
    metrics = {v: s["results"]["mini"]["off"] for v, s in summaries.items()}
    assert metrics["2"]["thinking_tokens"]["mean"] < 0.8 * metrics["1"]["thinking_tokens"]["mean"]
    assert (metrics["1"]["accuracy"], metrics["3"]["accuracy"]) == (1.0, 0.0)
    _check_promotion_flow(recipe, client)

    # A real `mlflow server` (started first, so it came up meanwhile): the same evaluations logged
    # through its REST API and artifact proxy.
    url = mlflow_server.ready()
    remote = make_recipe(tmp_path / "remote", student_path, tracking_uri=url, **eval_fields)
    register_versions(url, MODEL, 4, tmp_path / "remote")
    for version, summary in summaries.items():
        ref = ModelRef(f"models:/{MODEL}/{version}", MODEL, version)
        log_evaluation(remote, recipe.run_dir / "eval" / summary["label"], summary, ref)
    _check_promotion_flow(remote, registry_client(url))


def test_gate_arithmetic() -> None:
    from l2ray.eval.config import PromotionGate

    def summary(accuracy: float, thinking: float) -> dict:
        return {
            "comparable_hash": "h",
            "fingerprint": {"configurations": {"off": {}}},
            "results": {
                "b": {"off": {"accuracy": accuracy, "thinking_tokens": {"mean": thinking}, "failures": 0}}
            },
        }

    gate = PromotionGate(max_accuracy_drop=0.02, min_thinking_token_reduction=0.1)
    assert decide(summary(0.49, 90.0), summary(0.5, 100.0), gate)[0] == "promoted"
    assert decide(summary(0.47, 50.0), summary(0.5, 100.0), gate)[0] == "rejected"  # accuracy fell too far
    assert decide(summary(0.6, 91.0), summary(0.5, 100.0), gate)[0] == "rejected"  # only 9 % fewer tokens
    assert decide(summary(0.6, 91.0), None, gate)[0] == "promoted"
