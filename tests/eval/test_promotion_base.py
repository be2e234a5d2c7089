"""The promotion gate compares a candidate with the model it was trained from: a student no better
than its base is not promoted, even with no champion to beat."""

from __future__ import annotations

from l2ray.eval.config import PromotionGate
from l2ray.eval.promotion import decide


def _summary(accuracy: float, thinking: float = 100.0, comparable: str = "h") -> dict:
    metrics = {
        "accuracy": accuracy,
        "thinking_tokens": {"mean": thinking},
        "thinking_tokens_by_problem": {"p": [thinking]},
        "failures": 0,
        "failure_rate": 0.0,
    }
    return {
        "comparable_hash": comparable,
        "fingerprint": {"configurations": {"off": {}}, "sampling": {"max_tokens": 8}},
        "results": {"b": {"off": metrics}},
    }


def test_a_student_no_better_than_its_base_is_not_promoted():
    gate = PromotionGate()
    outcome, reasons = decide(_summary(0.0), None, gate, base=_summary(0.0))
    assert outcome == "rejected"
    assert reasons[-1] == "b/off: accuracy 0.000 vs base 0.000 (must be higher): FAIL"
    assert decide(_summary(0.3), None, gate, base=_summary(0.4))[0] == "rejected"
    assert decide(_summary(0.5), None, gate, base=_summary(0.4))[0] == "promoted"
    # It beats the champion, but not its base: still rejected.
    assert decide(_summary(0.4, 50.0), _summary(0.3), gate, base=_summary(0.4))[0] == "rejected"
    assert decide(_summary(0.5, 50.0), _summary(0.3), gate, base=_summary(0.4))[0] == "promoted"


def test_a_base_evaluated_differently_refuses_and_no_base_leaves_the_gate_as_it_was():
    gate = PromotionGate()
    outcome, reasons = decide(_summary(0.5), None, gate, base=_summary(0.1, comparable="other"))
    assert outcome == "refused" and "Evaluate the base with the same recipe.eval" in reasons[-1]
    assert decide(_summary(0.0), None, gate) == decide(_summary(0.0), None, gate, base=None)
    assert decide(_summary(0.0), None, gate)[0] == "promoted"  # the first champion rule alone
