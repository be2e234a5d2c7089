"""`l2ray run` end to end on the smoke recipe: every stage's outputs, skipping, and resuming."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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
def killed_after_train(smoke):
    """`l2ray run` in its own process group, SIGKILLed as soon as training is recorded as done."""
    state_file = smoke.run_dir / "pipeline.json"
    overrides = ["--set", f"output_dir={Path(smoke.output_dir)}"]
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "l2ray"), "run", "--config", str(REPO / "configs" / "smoke.yaml"),
         *overrides],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the driver and the Ray processes it starts share one group to kill
    )  # fmt: skip
    deadline = time.monotonic() + 600
    try:
        while "train" not in _state(state_file):
            assert proc.poll() is None, "the run ended before training was recorded"
            assert time.monotonic() < deadline, "training was not recorded within 10 minutes"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return _state(state_file)


def test_a_run_killed_after_training_resumes_at_evaluation(ray_cluster, killed_after_train, smoke):
    assert {"synth", "train"} <= set(killed_after_train)
    assert "promote" not in killed_after_train

    lines: list[str] = []
    second = run_pipeline(smoke, log=lines.append)
    assert [s.name for s in second.stages] == list(STAGES)
    assert [s.name for s in second.stages if s.skipped] == [s for s in STAGES if s in killed_after_train]
    assert any(line.startswith("[eval_student] running") for line in lines)

    train = second.stage("train").outputs
    assert train["model_uri"].startswith("models:/smoke/") and train["steps"] > 0
    synth_summary = json.loads(Path(second.stage("synth").outputs["summary"]).read_text())
    assert synth_summary["rows_by_kind"]["original"] == 3
    accuracy = {}
    for label in ("eval_base", "eval_student"):
        summary = json.loads(Path(second.stage(label).outputs["summary"]).read_text())
        metrics = summary["results"]["mini"]["off"]
        assert metrics["problems"] == 2 and 0.0 <= metrics["accuracy"] <= 1.0
        assert metrics["thinking_tokens"]["mean"] > 0
        assert Path(second.stage(label).outputs["report"]).exists()
        accuracy[label] = metrics["accuracy"]
    # The gate compares the student with its base too: one no better than the base is not promoted.
    outcome = "promoted" if accuracy["eval_student"] > accuracy["eval_base"] else "rejected"
    assert second.stage("promote").outputs["outcome"] == outcome

    readme = (smoke.run_dir / "README.md").read_text()
    assert "## Evaluation (base vs student)" in readme and outcome in readme
    assert f"mlflow ui --backend-store-uri {smoke.tracking_uri}" in readme


def test_a_second_run_skips_every_stage(ray_cluster, killed_after_train, smoke):
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


def _state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet (writes are atomic renames)
        return {}


def test_unknown_stage_is_rejected_before_any_work(smoke):
    with pytest.raises(ValueError, match="not a stage"):
        run_pipeline(smoke, until="deploy")
