"""End to end: `run_eval` on the offline student in-process and against real local HTTP servers."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from evalkit import completion, make_recipe, mini_answers, question_of, register_versions
from typer.testing import CliRunner

from l2ray.cli import app
from l2ray.eval.api import run_eval
from l2ray.eval.engines import EndpointError
from l2ray.eval.mlflow_log import EVAL_RUN_TAG
from l2ray.eval.report import read_samples
from l2ray.mlflow_store import mlflow_client

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
    assert fp["model"]["uri"] == str(student_path)
    assert fp["engine"] == {"kind": "local", "endpoint": None, "served_model": None}
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
    # No eval.served_model: the one model the endpoint lists is asked for, and recorded.
    assert {b["model"] for b in server.requests} == {"fake"}
    engine = {"kind": "http", "endpoint": server.base_url, "served_model": "fake"}
    assert result.summary["fingerprint"]["engine"] == engine


@pytest.mark.slow
def test_http_eval_of_a_registry_version_asks_for_the_served_name_and_fails_when_refused(
    ray_cluster, student_path, tmp_path: Path, chat_server
) -> None:
    # Like l2ray serve: /v1/models lists only the served name, any other model is a 404.
    answers = mini_answers()

    def behaviour(body: dict) -> tuple[int, dict]:
        if body["model"] != "l2ray":
            return 404, {"error": {"message": f"model {body['model']!r} does not exist; served: 'l2ray'"}}
        return 200, completion(f"<|lang:en|>easy</think>\n\n\\boxed{{{answers[question_of(body)]}}}")

    server = chat_server(behaviour, models=("l2ray",))
    recipe = make_recipe(tmp_path, student_path, limit=2, endpoint=server.base_url)
    [version] = register_versions(recipe.tracking_uri, "l2ray-eval-test", 1, tmp_path)
    uri = f"models:/l2ray-eval-test/{version}"
    client = mlflow_client(recipe.tracking_uri)

    # Sending the pinned registry URI (as a recipe naming it does) is refused on every request: the run
    # fails instead of logging accuracy 0 and tagging the version with it.
    pinned = recipe.model_copy(update={"eval": recipe.eval.model_copy(update={"served_model": uri})})
    with pytest.raises(EndpointError, match=r"refused all 2 requests \(first: HTTP 404: .*does not exist"):
        run_eval(pinned, model=uri, label="pinned")
    assert EVAL_RUN_TAG not in client.get_model_version("l2ray-eval-test", version).tags
    assert not (recipe.run_dir / "eval" / "pinned").exists()

    # Without eval.served_model the endpoint's own name is asked for; the version gets its evaluation.
    result = run_eval(recipe, model=uri)
    m = result.summary["results"]["mini"]["off"]
    assert (m["failures"], m["accuracy"]) == (0, 1.0)
    assert {b["model"] for b in server.requests[-2:]} == {"l2ray"}
    assert result.summary["fingerprint"]["engine"]["served_model"] == "l2ray"
    assert result.summary["fingerprint"]["model"]["uri"] == uri
    tags = client.get_model_version("l2ray-eval-test", version).tags
    assert tags[EVAL_RUN_TAG] == result.mlflow_run_id


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
    # The usual deployment: the server runs the champion alias, the eval names the pinned version.
    # l2ray serve answers only to its served_model_name, so the eval must ask /v1/models for it.
    from evalkit import log_student
    from local_servers import free_port
    from ray import serve

    from l2ray.serve.api import run_server

    recipe = make_recipe(
        tmp_path, student_path, limit=2, max_tokens=10, configurations={"force_zh": {"force": "zh"}}
    )
    name = recipe.registered_model_name
    version = log_student(recipe.tracking_uri, name, student_path, tmp_path / "artifacts")
    mlflow_client(recipe.tracking_uri).set_registered_model_alias(name, "champion", version)
    try:
        url = run_server(recipe, model_uri=f"models:/{name}@champion", port=free_port())
        result = run_eval(recipe, model=f"models:/{name}/{version}", endpoint=url, label="served")
    finally:
        serve.shutdown()
    m = result.summary["results"]["mini"]["force_zh"]
    assert (m["samples"], m["failures"]) == (2, 0)
    assert m["engine_completion_tokens_mean"] <= 10
    assert result.summary["fingerprint"]["engine"]["served_model"] == recipe.serve.served_model_name
    for record in read_samples(result.out_dir / "samples.jsonl"):
        # The server forced Chinese: the thinking opens with the zh tag and the usage says how much it cost.
        assert record["response"].startswith("<|lang:zh|>")
        assert record["engine_usage"]["completion_tokens"] <= 10
        assert record["truncated"] == (record["finish_reason"] == "length")
    tags = mlflow_client(recipe.tracking_uri).get_model_version(name, version).tags
    assert tags[EVAL_RUN_TAG] == result.mlflow_run_id


@pytest.mark.slow
def test_in_process_eval_on_vllm_recounts(ray_cluster, student_path, tmp_path: Path) -> None:
    pytest.importorskip("vllm")
    recipe = make_recipe(
        tmp_path,
        student_path,
        limit=2,
        samples=2,
        max_tokens=12,
        engine="vllm",
        vllm={"dtype": "float32", "enforce_eager": True},
        configurations={"off": {}, "force_zh": {"force": "zh"}},
    )
    result = run_eval(recipe, label="vllm")
    out = recipe.run_dir / "eval" / result.label
    records = read_samples(out / "samples.jsonl")
    summary = json.loads((out / "summary.json").read_text())
    assert len(records) == 2 * 2 * 2 and not any(r["failed"] for r in records)
    assert all(r["engine_usage"]["completion_tokens"] == 12 for r in records)  # no EOS from this student
    assert summary["fingerprint"]["engine"]["kind"] == "vllm"
    for configuration, m in summary["results"]["mini"].items():
        rows = [r for r in records if r["configuration"] == configuration]
        assert m["samples"] == len(rows) == 4 and m["failures"] == 0
        assert m["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows), abs=1e-6)
    forced = [r for r in records if r["configuration"] == "force_zh"]
    assert all(r["engine_usage"]["tag_mix"] == {"zh": 1.0} for r in forced)  # the processor ran
