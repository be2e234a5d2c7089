"""Helpers for the registry tests: evaluated versions without an evaluation run, and a promotion run in
a process of its own that reports the gate's decision before it waits for the alias lock."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
from pathlib import Path
from typing import Any

from l2ray.recipe import Recipe


def gate_summary(accuracy: float = 1.0, thinking: float = 100.0, comparable: str = "h") -> dict[str, Any]:
    """A minimal ``summary.json`` for the promotion gate: one benchmark ``b``, one configuration ``off``,
    one problem ``p`` with ``thinking`` mean thinking tokens, no failures."""
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


def evaluated_versions(client: Any, name: str, summaries: list[dict[str, Any]], folder: Path) -> list[str]:
    """Register one version per summary, each from a run that logged it as ``eval/summary.json`` and
    is attached to the version the way ``l2ray eval`` attaches its run."""
    from l2ray.eval.mlflow_log import attach_evaluation
    from l2ray.mlflow_store import ensure_experiment

    experiment = ensure_experiment(client, "registry-test", folder / "artifacts")
    client.create_registered_model(name)
    versions = []
    for index, summary in enumerate(summaries):
        run_id = client.create_run(experiment).info.run_id
        files = folder / f"eval-{index}"
        files.mkdir(parents=True)
        (files / "summary.json").write_text(json.dumps(summary))
        client.log_artifacts(run_id, str(files), artifact_path="eval")
        client.set_terminated(run_id)
        version = client.create_model_version(name, f"runs:/{run_id}/eval", run_id=run_id).version
        attach_evaluation(client, name, str(version), run_id, {**summary, "label": f"v{version}"})
        versions.append(str(version))
    return versions


def promote_in_process(recipe: Recipe, candidate: str, env: dict[str, str], queue: Any) -> None:
    """`promote` in a spawned process: its log records go to ``queue`` (the parent waits for the
    gate's first decision there), then ``("done", candidate, Decision.to_dict())``."""
    os.environ.update(env)
    handler = logging.handlers.QueueHandler(queue)
    logger = logging.getLogger("l2ray.eval.api")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    from l2ray.eval.api import promote

    try:
        queue.put(("done", candidate, promote(recipe, candidate).to_dict()))
    except Exception as exc:
        queue.put(("error", candidate, f"{type(exc).__name__}: {exc}"))
