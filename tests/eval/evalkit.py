"""Helpers for evaluation tests: a real local OpenAI-compatible HTTP server, recipes, registry versions."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from l2ray.eval.benchmarks import load_benchmark
from l2ray.recipe import Recipe, recipe_from_dict
from l2ray.train.mlflow_run import Tracker

Behaviour = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


class FakeChatServer:
    """A threaded HTTP server on 127.0.0.1 speaking enough of the OpenAI chat API for evaluation.

    ``behaviour(body) -> (status, json)`` decides each answer; every request body is kept in
    ``requests`` so tests can check what was sent. ``GET /models`` lists ``models`` (404 when ``None``,
    like a server without that route); with ``api_key`` set, every route wants that bearer key (401).
    """

    def __init__(
        self, behaviour: Behaviour, models: tuple[str, ...] | None = ("fake",), api_key: str | None = None
    ) -> None:
        self.behaviour = behaviour
        self.models = models
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self._refused():
                    return
                if not self.path.rstrip("/").endswith("/models") or server.models is None:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                cards = [{"id": name, "object": "model"} for name in server.models]
                self._send(200, {"object": "list", "data": cards})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self._refused():
                    return
                server.requests.append(body)
                self._send(*server.behaviour(body))

            def _refused(self) -> bool:
                if api_key is None or self.headers.get("Authorization") == f"Bearer {api_key}":
                    return False
                self._send(401, {"error": {"message": "invalid API key", "code": "invalid_api_key"}})
                return True

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def completion(text: str, finish_reason: str = "stop", reasoning: str | None = None) -> dict[str, Any]:
    """An OpenAI chat completion body holding ``text`` (and ``reasoning_content``, as servers that split
    the thinking out send it)."""
    message = {"role": "assistant", "content": text}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 5, "completion_tokens": len(text.split()), "total_tokens": 5},
    }


def mini_answers() -> dict[str, str]:
    """Question text -> gold answer of the bundled mini set (the fake server answers from it)."""
    return {p.question: p.answer for p in load_benchmark("mini").problems}


def question_of(body: dict[str, Any]) -> str:
    """The question inside a request built by `l2ray.eval.tasks.build_messages`."""
    return body["messages"][-1]["content"].rsplit("\n\n", 1)[0]


def make_recipe(
    tmp_path: Path, student_path: Path, tracking_uri: str | None = None, **eval_fields: Any
) -> Recipe:
    """A recipe writing under ``tmp_path``, counting tokens with the offline student's tokenizer."""
    return recipe_from_dict(
        {
            "name": "evaltest",
            "output_dir": str(tmp_path / "runs"),
            "student": {"model": str(student_path)},
            "tracking": {
                "tracking_uri": tracking_uri or f"sqlite:///{tmp_path / 'mlflow.db'}",
                "registered_model": "l2ray-eval-test",
            },
            "eval": {"tokenizer": str(student_path), "api_key_env": None, **eval_fields},
        }
    )


def register_versions(tracking_uri: str, name: str, count: int, artifact_dir: Path) -> list[str]:
    """Register ``count`` versions of ``name``, each from a run with a small logged artifact."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment = client.get_experiment_by_name("registry-fixture")
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment(
            "registry-fixture",
            artifact_location=(artifact_dir / "fixture-artifacts").as_uri()
            if tracking_uri.startswith("sqlite")
            else None,
        )
    )
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    versions = []
    for index in range(count):
        run = client.create_run(experiment_id)
        weights = artifact_dir / f"weights-{index}"
        weights.mkdir(parents=True, exist_ok=True)
        (weights / "weights.txt").write_text(f"model {index}\n")
        client.log_artifacts(run.info.run_id, str(weights), artifact_path="model")
        client.set_terminated(run.info.run_id)
        version = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
        versions.append(str(version.version))
    return versions


def log_student(tracking_uri: str, name: str, student_path: Path, artifact_dir: Path) -> str:
    """Log the student as a new version of ``name`` with the code `l2ray train` publishes with."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tracker = Tracker(tracking_uri)  # pinned to this store: other tests inherit no global URI
    run_id = tracker.start_run("student-fixture", {}, artifact_dir)
    model = AutoModelForCausalLM.from_pretrained(student_path)
    version, _ = tracker.log_and_register(
        run_id, model, AutoTokenizer.from_pretrained(student_path), name, tags={}
    )
    tracker.finish(run_id)
    return version
