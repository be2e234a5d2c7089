"""MLflow side of evaluation: one run per evaluation, linked to the model version it evaluated.

The run holds the metrics (``<benchmark>.<configuration>.<metric>``), the fingerprint as params and
every file of ``<run_dir>/eval/<label>/`` under the artifact path ``eval/``. After an `l2ray eval` of a
registry model, its version gets tags pointing at that run (`EVAL_RUN_TAG`, `EVAL_HASH_TAG`), which is
what promotion reads; other stages (the pilot) are logged beside it and leave the version alone.

Example:
    >>> run_id = log_evaluation(recipe, out_dir, summary, ref)  # doctest: +SKIP
    >>> load_version_evaluation(client, uri, "demo", "3").summary["comparable_hash"]  # doctest: +SKIP
    '5f0c…'
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from l2ray.mlflow_store import ensure_experiment, mlflow_client
from l2ray.recipe import Recipe
from l2ray.student.model_ref import ModelRef

EVAL_RUN_TAG = "l2ray.eval.run_id"
EVAL_HASH_TAG = "l2ray.eval.comparable_hash"
EVAL_LABEL_TAG = "l2ray.eval.label"
ARTIFACT_DIR = "eval"
STAGE_TAG = "l2ray.stage"

Stage = Literal["eval", "pilot"]


def log_evaluation(
    recipe: Recipe, out_dir: Path, summary: dict[str, Any], ref: ModelRef, stage: Stage = "eval"
) -> str:
    """Log one evaluation as an MLflow run; an ``eval`` of a registry model also tags its version.

    A ``pilot`` run keeps the model's name and version as run tags (to find it) but never touches the
    version's tags: those say which evaluation promotion compares, and a pilot asks other questions
    (translated seed problems, no intervention) whose numbers must not stand in for it.
    """
    from mlflow.entities import Metric, Param

    client = mlflow_client(recipe.tracking_uri)
    experiment_id = ensure_experiment(client, recipe.experiment_name, recipe.run_dir / "mlartifacts")
    tags = {
        STAGE_TAG: stage,
        EVAL_LABEL_TAG: summary["label"],
        EVAL_HASH_TAG: summary["comparable_hash"],
    }
    if ref.name:
        tags.update({"l2ray.model_name": ref.name, "l2ray.model_version": ref.version})
    label = summary["label"]
    run_name = label if label == stage else f"{stage}-{label}"  # "pilot", not "pilot-pilot"
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    run_id = run.info.run_id
    now = run.info.start_time
    metrics = [
        Metric(f"{benchmark}.{configuration}.{key}", float(value), now, 0)
        for benchmark, configurations in summary["results"].items()
        for configuration, values in configurations.items()
        for key, value in _scalar_metrics(values).items()
    ]
    fp = summary["fingerprint"]
    params = [
        Param("model_uri", fp["model"]["uri"]),
        Param("engine", fp["engine"]["kind"]),
        Param("grader", fp["grader"]),
        Param("fingerprint_hash", summary["fingerprint_hash"]),
        Param("comparable_hash", summary["comparable_hash"]),
        *(Param(f"sampling.{k}", str(v)) for k, v in fp["sampling"].items()),
        Param("benchmarks", ",".join(d["name"] for d in fp["datasets"])),
        Param("configurations", ",".join(fp["configurations"])),
    ]
    client.log_batch(run_id, metrics=metrics, params=params)
    client.log_artifacts(run_id, str(out_dir), artifact_path=ARTIFACT_DIR)
    client.set_terminated(run_id)
    if ref.name and stage == "eval":
        attach_evaluation(client, ref.name, ref.version, run_id, summary)
    return run_id


def attach_evaluation(client: Any, name: str, version: str, run_id: str, summary: dict[str, Any]) -> None:
    """Point a model version at an evaluation run (what `log_evaluation` does for registry models)."""
    client.set_model_version_tag(name, version, EVAL_RUN_TAG, run_id)
    client.set_model_version_tag(name, version, EVAL_HASH_TAG, summary["comparable_hash"])
    client.set_model_version_tag(name, version, EVAL_LABEL_TAG, summary["label"])


@dataclass(frozen=True)
class Evaluation:
    """A logged evaluation as promotion reads it: the summary, its run and the summary file's digest
    (the evidence a decision records on the version)."""

    summary: dict[str, Any]
    run_id: str
    sha256: str

    def evidence(self) -> dict[str, str]:
        return {"eval_run_id": self.run_id, "summary_sha256": self.sha256}


def load_version_evaluation(client: Any, tracking_uri: str, name: str, version: str) -> Evaluation | None:
    """The latest evaluation of a version (what `EVAL_RUN_TAG` points at), ``None`` when it has none."""
    run_id = client.get_model_version(name, version).tags.get(EVAL_RUN_TAG)
    return download_evaluation(tracking_uri, run_id) if run_id else None


def download_evaluation(tracking_uri: str, run_id: str) -> Evaluation:
    """The ``summary.json`` an evaluation run logged, with its SHA-256."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path=f"{ARTIFACT_DIR}/summary.json",
            dst_path=tmp,
            tracking_uri=tracking_uri,
        )
        data = Path(path).read_bytes()
    return Evaluation(json.loads(data.decode("utf-8")), run_id, hashlib.sha256(data).hexdigest())


def _scalar_metrics(values: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float):
            out[key] = value
        elif key in ("thinking_tokens", "answer_tokens"):
            out.update({f"{key}_{k}": v for k, v in value.items() if v is not None})
        elif key == "pass_at_k":
            out.update({f"pass_at_{k}": v for k, v in value.items()})
    return out


__all__ = [
    "EVAL_HASH_TAG",
    "EVAL_RUN_TAG",
    "STAGE_TAG",
    "Evaluation",
    "attach_evaluation",
    "download_evaluation",
    "load_version_evaluation",
    "log_evaluation",
]
