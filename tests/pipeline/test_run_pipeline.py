"""`l2ray run` end to end on the smoke recipe: every stage's outputs, skipping, and resuming."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from l2ray.cli import app
from l2ray.console import WIDTH
from l2ray.pipeline import STAGES, run_pipeline, stage_fingerprints
from l2ray.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return load_recipe(REPO / "configs" / "smoke.yaml", [f"output_dir={out}"])


@pytest.fixture(scope="module")
def killed_after_train(smoke, tmp_path_factory):
    """`l2ray run` in its own process group, SIGKILLed as soon as training is recorded as done; its
    terminal output (stdout and stderr, as a person running it would see them) is in ``terminal.txt``."""
    state_file = smoke.run_dir / "pipeline.json"
    overrides = ["--set", f"output_dir={Path(smoke.output_dir)}"]
    terminal = (tmp_path_factory.mktemp("terminal") / "terminal.txt").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "l2ray"), "run", "--config", str(REPO / "configs" / "smoke.yaml"),
         *overrides],
        stdout=terminal,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the driver and the Ray processes it starts share one group to kill
    )  # fmt: skip
    deadline = time.monotonic() + 600
    try:
        # Recorded, and its line shown (the line follows the record by a moment).
        while "train" not in _state(state_file) or "✓ train" not in Path(terminal.name).read_text("utf-8"):
            assert proc.poll() is None, "the run ended before training was recorded and shown"
            assert time.monotonic() < deadline, "training was not recorded and shown within 10 minutes"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        terminal.close()
    return _state(state_file) | {"terminal": Path(terminal.name).read_text(encoding="utf-8")}


@pytest.fixture(scope="module")
def resumed(ray_cluster, killed_after_train, smoke):
    """`l2ray run` again, in this process (on the session's cluster): it continues at evaluation."""
    result = CliRunner().invoke(app, ["run", "--config", str(REPO / "configs/smoke.yaml"), *_output(smoke)])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_run_killed_after_training_resumes_at_evaluation(resumed, killed_after_train, smoke):
    assert {"synth", "train"} <= set(killed_after_train)
    assert "promote" not in killed_after_train

    second = run_pipeline(smoke, log=lambda line: None)  # every stage now done: read the records
    assert [s.name for s in second.stages] == list(STAGES)
    skipped_on_resume = [line.split()[1] for line in resumed.splitlines() if line.startswith("- ")]
    assert skipped_on_resume == [s for s in STAGES if s in killed_after_train]
    assert re.search(r"^✓ eval_student +[\d.]+ s  accuracy [\d.]+% · [\d.]+ thinking tokens", resumed, re.M)

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


RAY_LOG_LINE = re.compile(
    r"\((?:\w[\w()]*)? ?pid=\d+|\b(?:INFO|DEBUG)\b|TrainingReport\(|streaming_executor|Traceback|\x1b\["
)
"""What Ray writes itself: a worker's ``(Name pid=N)`` prefix, log levels, report dumps, colour codes."""


def test_the_terminal_tells_the_stages_and_no_raw_ray_output(killed_after_train, resumed):
    for output in (killed_after_train["terminal"], resumed):
        assert not [line for line in output.splitlines() if RAY_LOG_LINE.search(line)], output
        assert not [line for line in output.splitlines() if len(line) > WIDTH], output
    stage_lines = [line for line in killed_after_train["terminal"].splitlines() if line.startswith("✓ ")]
    assert [line.split()[1] for line in stage_lines][:2] == ["synth", "train"]
    assert re.search(r"✓ synth .* 12 traces accepted, 0 rejected", killed_after_train["terminal"])
    assert re.search(r"✓ train .* loss [\d.]+ · \d+ steps · [\d,]+ tokens/s", killed_after_train["terminal"])


def test_the_closing_summary_fits_100_columns_and_its_commands_copy_whole(resumed, smoke):
    lines = resumed.splitlines()
    outcome = _promotion_outcome(smoke)
    assert "run smoke: base vs student" in resumed and f"promotion: {outcome} version 1" in resumed
    assert f"  mlflow ui --backend-store-uri {smoke.tracking_uri}" in lines  # one line, never wrapped
    serve = f"  l2ray serve --config {REPO / 'configs/smoke.yaml'} --model models:/smoke@champion"
    assert (serve in lines) == (outcome == "promoted")  # no command to serve a champion that is not there
    assert any(line.startswith("full log: ") and "/logs/run-" in line for line in lines)


def test_json_prints_the_same_summary(resumed, smoke):
    result = CliRunner().invoke(
        app, ["run", "--config", str(REPO / "configs/smoke.yaml"), *_output(smoke), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [(s["name"], s["state"]) for s in summary["stages"]] == [(s, "skipped") for s in STAGES]
    assert summary["promotion"] == {"outcome": _promotion_outcome(smoke), "version": "1"}
    pairs = {(r["model"], r["configuration"]) for r in summary["comparison"]}
    assert {("base", "off"), ("student", "off"), ("base", "boost_zh"), ("student", "boost_zh")} <= pairs
    assert summary["commands"]["browse"] == f"mlflow ui --backend-store-uri {smoke.tracking_uri}"
    assert summary["stages"][1]["figure"].startswith("loss ")


def test_verbose_leaves_the_output_on_the_terminal_and_writes_no_log(resumed, smoke):
    logs = set((smoke.run_dir / "logs").iterdir())
    result = CliRunner().invoke(
        app, ["run", "--config", str(REPO / "configs/smoke.yaml"), *_output(smoke), "--verbose"]
    )
    assert result.exit_code == 0, result.output
    assert [line.split()[1] for line in result.output.splitlines() if line.startswith("- ")] == list(STAGES)
    assert "full log:" not in result.output and set((smoke.run_dir / "logs").iterdir()) == logs


def _output(smoke) -> list[str]:
    return ["--set", f"output_dir={Path(smoke.output_dir)}"]


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


def _promotion_outcome(smoke) -> str:
    """The gate's decision recorded by the run (the smoke student may be no better than its base)."""
    state = json.loads((smoke.run_dir / "pipeline.json").read_text())
    return state["promote"]["outputs"]["outcome"]
