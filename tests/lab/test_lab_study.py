"""A CI-sized lab through the real stages: synthesis (Ray Data), SFT (Ray Train, MLflow), evaluation
(Ray Data, the decode engine's intervention), the pilot and the report.

The base student is the study's shape pre-trained for 600 steps instead of 1500 (CI time: building
it is the largest part of this test on a fresh machine), built once per machine into the l2ray
cache. The directions below hold on this configuration (3 passed from an empty cache) and on the
1500-step base they were first measured on (docs/lab.md). That the SFT student beats its base is
NOT asserted: on the student these machines can pre-train it does not yet, and ``force`` moved the
language of thinking on one such student and not on another (docs/lab.md, "Measured").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from l2ray.lab.config import BaseStudentConfig, LabConfig
from l2ray.lab.report import read_samples, recount
from l2ray.lab.study import run_study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(ray_cluster, tmp_path_factory) -> dict:
    config = LabConfig(
        name="ci",
        base=BaseStudentConfig(steps=600),
        output_dir=str(tmp_path_factory.mktemp("lab")),
        arms=["base", "l2", "paraphrase"],
        k=[6],
        train_seeds=[0],
        eval_problems=100,
        pilot_problems=8,
        sweeps={
            "boost_zh": {"boost": ["zh"], "beta": 10.0},
            "budget_32": {"max_thinking_tokens": 32},
        },
        recipe={"train": {"metrics_flush_s": 0.0}},
    )
    return run_study(config, progress=lambda message: None)


def _arm(study: dict, arm: str) -> dict:
    return next(run for run in study["runs"] if run["arm"] == arm)


def test_the_paraphrase_baseline_has_the_rows_and_about_the_tokens_of_l2(study):
    l2, paraphrase = _arm(study, "l2"), _arm(study, "paraphrase")
    assert paraphrase["train_rows"] == l2["train_rows"]
    assert abs(paraphrase["train_tokens"] - l2["train_tokens"]) <= 0.05 * l2["train_tokens"]
    data = json.loads(Path(paraphrase["train"]["data"]).read_text())
    assert data["rows"] == l2["train_rows"] and data["rows_per_language"] == {"en": data["rows"]}


def test_boost_moves_the_language_of_thinking_and_budgets_cut_tokens(study):
    sweeps = study["sweeps"]["configurations"]
    zh = {name: m["language_shares"].get("zh", 0.0) for name, m in sweeps.items()}
    assert zh["boost_zh"] > zh["off"], zh
    off = sweeps["off"]["thinking_tokens"]
    assert sweeps["budget_32"]["thinking_tokens"] < off
    assert sweeps["budget_32"]["thinking_tokens"] <= 40  # the budget, plus the closing the engine appends


def test_the_reports_numbers_recount_from_the_samples(study, tmp_path):
    out = Path(study["report"]).parent
    summary = json.loads((out / "summary.json").read_text())
    for run in summary["runs"]:
        samples = read_samples(run["samples"])
        accuracy = sum(s["correct"] for s in samples) / len(samples)
        assert run["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-4)
        own = json.loads((Path(run["samples"]).parent / "summary.json").read_text())
        assert own["results"]["lab"]["off"]["accuracy"] == pytest.approx(accuracy, abs=1e-3)
        assert recount(run["samples"])["off"] == run["metrics"]
    assert set(summary["pilot"]["languages"]) == {"en", "zh", "ja", "de", "fr", "ru"}
    for metrics in summary["pilot"]["languages"].values():
        assert metrics["question_tokens_per_char"] > 0
    report = (out / "report.md").read_text()
    for row in summary["arms"]:
        k = "—" if row["arm"] == "base" else row["k"]
        assert f"| {k} | {row['arm']} |" in report and f"{row['accuracy']:.3f}" in report
    for name in ("accuracy_vs_tokens.png", "sweeps.png", "pilot.png"):
        assert (out / name).stat().st_size > 1000
