"""`l2ray run` end to end on the smoke recipe: every stage's outputs, skipping, and resuming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from l2ray.config import load_recipe
from l2ray.pipeline import STAGES, run_pipeline, stage_fingerprints

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return load_recipe(REPO / "configs" / "smoke.yaml", [f"output_dir={out}"])


@pytest.fixture(scope="module")
def stopped_after_train(ray_cluster, smoke):
    """A first run that stops after training, as a run killed there would (state is written per stage)."""
    lines: list[str] = []
    result = run_pipeline(smoke, until="train", log=lines.append)
    return result, lines


def test_run_stopped_after_training_resumes_at_evaluation(stopped_after_train, smoke):
    first, _ = stopped_after_train
    assert [s.name for s in first.stages] == ["synth", "train"]
    state = json.loads((smoke.run_dir / "pipeline.json").read_text())
    assert set(state) == {"synth", "train"}

    lines: list[str] = []
    second = run_pipeline(smoke, log=lines.append)
    assert [s.name for s in second.stages] == list(STAGES)
    assert [s.name for s in second.stages if s.skipped] == ["synth", "train"]
    assert any(line.startswith("[eval_base] running") for line in lines)

    train = second.stage("train").outputs
    assert train["model_uri"].startswith("models:/smoke/") and train["steps"] > 0
    synth_summary = json.loads(Path(second.stage("synth").outputs["summary"]).read_text())
    assert synth_summary["rows_by_kind"]["original"] == 3
    for label in ("eval_base", "eval_student"):
        summary = json.loads(Path(second.stage(label).outputs["summary"]).read_text())
        metrics = summary["results"]["mini"]["off"]
        assert metrics["problems"] == 2 and 0.0 <= metrics["accuracy"] <= 1.0
        assert metrics["thinking_tokens"]["mean"] > 0
        assert Path(second.stage(label).outputs["report"]).exists()
    assert second.stage("promote").outputs["outcome"] == "promoted"

    readme = (smoke.run_dir / "README.md").read_text()
    assert "## Evaluation (base vs student)" in readme and "promoted" in readme
    assert f"mlflow ui --backend-store-uri {smoke.tracking_uri}" in readme


def test_a_second_run_skips_every_stage(stopped_after_train, smoke):
    run_pipeline(smoke, log=lambda line: None)  # finishes whatever an earlier test left undone
    before = (smoke.run_dir / "pipeline.json").read_text()
    lines: list[str] = []
    result = run_pipeline(smoke, log=lines.append)
    assert all(stage.skipped for stage in result.stages)
    assert len(lines) == len(STAGES) and all("skipped" in line for line in lines)
    assert (smoke.run_dir / "pipeline.json").read_text() == before


def test_changing_a_stage_section_reruns_it_and_everything_after():
    recipe = load_recipe(REPO / "configs" / "smoke.yaml")
    base = stage_fingerprints(recipe)
    changed_eval = stage_fingerprints(load_recipe(REPO / "configs" / "smoke.yaml", ["eval.limit=3"]))
    assert [s for s in STAGES if base[s] != changed_eval[s]] == ["eval_base", "eval_student", "promote"]
    changed_synth = stage_fingerprints(load_recipe(REPO / "configs" / "smoke.yaml", ["synth.p_switch=0.3"]))
    assert [s for s in STAGES if base[s] != changed_synth[s]] == ["synth", "train", "eval_student", "promote"]


def test_unknown_stage_is_rejected_before_any_work(smoke):
    with pytest.raises(ValueError, match="not a stage"):
        run_pipeline(smoke, until="deploy")
