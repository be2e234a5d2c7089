"""The promotion gate compares a candidate with the model it was trained from: a student no better
than its base is not promoted, even with no champion to beat."""

from __future__ import annotations

from registry_support import gate_summary

from l2ray.eval.promotion import decide
from l2ray.recipe import PromotionGate


def test_a_student_no_better_than_its_base_is_not_promoted():
    gate = PromotionGate()
    outcome, reasons = decide(gate_summary(0.0), None, gate, base=gate_summary(0.0))
    assert outcome == "rejected"
    assert reasons[-1] == "b/off: accuracy 0.000 vs base 0.000 (must be higher): FAIL"
    assert decide(gate_summary(0.3), None, gate, base=gate_summary(0.4))[0] == "rejected"
    assert decide(gate_summary(0.5), None, gate, base=gate_summary(0.4))[0] == "promoted"
    # It beats the champion, but not its base: still rejected.
    assert decide(gate_summary(0.4, 50.0), gate_summary(0.3), gate, base=gate_summary(0.4))[0] == "rejected"
    assert decide(gate_summary(0.5, 50.0), gate_summary(0.3), gate, base=gate_summary(0.4))[0] == "promoted"


def test_a_base_evaluated_differently_refuses_and_no_base_leaves_the_gate_as_it_was():
    gate = PromotionGate()
    outcome, reasons = decide(gate_summary(0.5), None, gate, base=gate_summary(0.1, comparable="other"))
    assert outcome == "refused" and "Evaluate the base with the same recipe.eval" in reasons[-1]
    assert decide(gate_summary(0.0), None, gate) == decide(gate_summary(0.0), None, gate, base=None)
    assert decide(gate_summary(0.0), None, gate)[0] == "promoted"  # the first champion rule alone


def test_the_base_evaluation_is_found_by_model_uri_and_comparable_hash(tmp_path):
    import hashlib
    import json

    from mlflow import MlflowClient
    from mlflow.entities import Param

    from l2ray.eval.mlflow_log import EVAL_HASH_TAG, STAGE_TAG
    from l2ray.eval.promotion import load_base_evaluation

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("lab", artifact_location=str(tmp_path / "artifacts"))
    (tmp_path / "eval").mkdir()
    for base, comparable, stage, accuracy in (
        ("/bases/it's here", "h1", "eval", 0.25),
        ("/bases/it's here", "h2", "eval", 0.5),
        ("/bases/it's here", "h1", "pilot", 0.75),
    ):
        run = client.create_run(experiment, tags={STAGE_TAG: stage, EVAL_HASH_TAG: comparable})
        client.log_batch(run.info.run_id, params=[Param("model_uri", base)])
        (tmp_path / "eval" / "summary.json").write_text(json.dumps({"accuracy": accuracy}))
        client.log_artifacts(run.info.run_id, str(tmp_path / "eval"), artifact_path="eval")
    first = load_base_evaluation(client, uri, "lab", "/bases/it's here", "h1")
    assert first.summary == {"accuracy": 0.25}
    assert first.sha256 == hashlib.sha256(b'{"accuracy": 0.25}').hexdigest()  # the file as logged
    assert load_base_evaluation(client, uri, "lab", "/bases/it's here", "h2").summary == {"accuracy": 0.5}
    assert load_base_evaluation(client, uri, "lab", "/bases/other", "h1") is None
    assert load_base_evaluation(client, uri, "no-such-experiment", "/bases/it's here", "h1") is None
