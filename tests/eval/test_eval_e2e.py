"""End to end: `run_eval` on the offline student in-process and against real local HTTP servers."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from evalkit import completion, make_recipe, mini_answers, question_of
from typer.testing import CliRunner

from l2ray.cli import app
from l2ray.eval.engines import EndpointError
from l2ray.eval.report import read_samples
from l2ray.eval.runner import run_eval

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_in_process_eval_writes_report_and_its_numbers_recount(
    ray_cluster, student_path, tmp_path: Path
) -> None:
    recipe = make_recipe(
        tmp_path,
        student_path,
        limit=3,
        samples=2,
        max_tokens=12,
        configurations={"off": {}, "boost_zh": {"boost": ["zh"], "beta": 8.0}},
    )
    result = run_eval(recipe)
    out = recipe.run_dir / "eval" / result.label
    assert result.out_dir == out
    for name in ("samples.jsonl", "summary.json", "report.md"):
        assert (out / name).stat().st_size > 0
    for name in ("accuracy_vs_tokens.png", "language_mix.png"):
        assert (out / name).read_bytes()[:8] == PNG

    records = read_samples(out / "samples.jsonl")
    summary = json.loads((out / "summary.json").read_text())
    assert len(records) == 3 * 2 * 2
    assert {r["configuration"] for r in records} == {"off", "boost_zh"}
    for configuration, m in summary["results"]["mini"].items():
        rows = [r for r in records if r["configuration"] == configuration]
        thinking = [r["thinking_tokens"] for r in rows]
        assert m["samples"] == len(rows) == 6 and m["problems"] == 3 and m["failures"] == 0
        assert m["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows), abs=1e-6)
        assert m["thinking_tokens"]["mean"] == pytest.approx(statistics.fmean(thinking), abs=1e-6)
        assert m["thinking_tokens"]["median"] == pytest.approx(statistics.median(thinking), abs=1e-6)
        assert m["answer_tokens"]["mean"] == pytest.approx(
            statistics.fmean(r["answer_tokens"] for r in rows), abs=1e-6
        )
        assert m["truncation_rate"] == pytest.approx(sum(r["truncated"] for r in rows) / len(rows), abs=1e-6)
        assert m["empty_answer_rate"] == pytest.approx(
            sum(r["extracted"] is None for r in rows) / 6, abs=1e-6
        )
        assert set(m["pass_at_k"]) == {"1", "2"}
        assert m["engine_completion_tokens_mean"] <= 12
    for record in records:
        # The untrained student babbles: every sample must still be graded, counted and measured.
        assert record["response"] is not None and record["grade_reason"]
        assert record["engine_usage"]["completion_tokens"] <= 12
        assert record["truncated"] == (record["finish_reason"] == "length")

    fp = summary["fingerprint"]
    assert fp["model"]["uri"] == str(student_path) and fp["engine"] == {"kind": "local", "endpoint": None}
    assert fp["sampling"] == {"temperature": 0.0, "max_tokens": 12, "samples": 2, "seed": 0, "limit": 3}
    assert fp["datasets"][0]["name"] == "mini" and fp["grader"].startswith("l2ray-grader")
    assert fp["configurations"]["boost_zh"]["boost"] == ["zh"]
    report = (out / "report.md").read_text()
    assert "| off |" in report and "| boost_zh |" in report and summary["fingerprint_hash"] in report

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=recipe.tracking_uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.data.metrics["mini.off.accuracy"] == summary["results"]["mini"]["off"]["accuracy"]
    assert run.data.params["comparable_hash"] == summary["comparable_hash"]
    assert {a.path for a in client.list_artifacts(run.info.run_id, "eval")} >= {
        "eval/summary.json",
        "eval/report.md",
    }


@pytest.mark.slow
def test_http_eval_counts_failed_requests_instead_of_dropping_them(
    ray_cluster, student_path, tmp_path: Path, chat_server
) -> None:
    answers = mini_answers()
    questions = list(answers)[:4]
    failing = set(questions[1:3])

    def behaviour(body: dict) -> tuple[int, dict]:
        question = question_of(body)
        if question in failing:
            return 500, {"error": {"message": "backend exploded"}}
        thinking = "<|lang:zh|>让我想一想。这个问题很简单。"
        text = f"{thinking}</think>\n\nThe answer is $\\boxed{{{answers[question]}}}$."
        return 200, completion(text)

    server = chat_server(behaviour)
    recipe = make_recipe(
        tmp_path, student_path, limit=4, max_retries=1, configurations={"boost_zh": {"boost": ["zh"]}}
    )
    result = run_eval(recipe, endpoint=server.base_url, label="http")
    m = result.summary["results"]["mini"]["boost_zh"]
    assert (m["samples"], m["failures"], m["failure_rate"]) == (4, 2, 0.5)
    assert m["accuracy"] == 0.5  # the two answered are right; the two failures count as wrong
    assert m["empty_answer_rate"] == 0.0 and m["truncation_rate"] == 0.0
    assert m["language_shares"] == {"zh": 1.0}
    records = read_samples(result.out_dir / "samples.jsonl")
    failed = [r for r in records if r["failed"]]
    assert {r["question"] for r in failed} == failing
    assert all(r["error"].startswith("HTTP 500") and not r["correct"] for r in failed)
    # Each failing request was tried twice (max_retries=1); every body carried the intervention.
    assert len(server.requests) == 2 + 2 * 2
    assert all(b["l2ray"]["boost"] == ["zh"] and b["l2ray"]["show_thinking"] for b in server.requests)
    assert result.summary["fingerprint"]["engine"] == {"kind": "http", "endpoint": server.base_url}


def test_unreachable_endpoint_is_a_clear_error(student_path, tmp_path: Path) -> None:
    recipe = make_recipe(tmp_path, student_path, limit=1, endpoint="http://127.0.0.1:9/v1")
    with pytest.raises(EndpointError, match=r"endpoint http://127.0.0.1:9/v1 is unreachable"):
        run_eval(recipe)


def test_cli_reports_bad_benchmarks_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["eval", "--set", f"output_dir={tmp_path}", "--set", "eval.benchmarks=[aime2024]"]
    )
    assert result.exit_code == 2
    assert "unknown benchmark 'aime2024'" in result.output


@pytest.mark.slow
def test_eval_through_the_serve_graph(ray_cluster, student_path, tmp_path: Path) -> None:
    from evalkit import free_port
    from ray import serve

    from l2ray.serve.api import run_server

    recipe = make_recipe(
        tmp_path, student_path, limit=2, max_tokens=10, configurations={"force_zh": {"force": "zh"}}
    )
    try:
        url = run_server(recipe, model_uri=str(student_path), port=free_port())
        result = run_eval(recipe, endpoint=url, label="served")
    finally:
        serve.shutdown()
    m = result.summary["results"]["mini"]["force_zh"]
    assert (m["samples"], m["failures"]) == (2, 0)
    assert m["engine_completion_tokens_mean"] <= 10
    for record in read_samples(result.out_dir / "samples.jsonl"):
        # The server forced Chinese: the thinking opens with the zh tag and the usage says how much it cost.
        assert record["response"].startswith("<|lang:zh|>")
        assert record["engine_usage"]["completion_tokens"] <= 10
        assert record["truncated"] == (record["finish_reason"] == "length")
