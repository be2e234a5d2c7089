"""MLflow plumbing shared by training, evaluation, promotion and the student resolver.

One rule for every stage: a client is pinned to one URI for tracking *and* the registry (never the
process-global store), and an experiment is created on the driver with an absolute artifact root when
the client itself writes artifacts (a local store), so no run's artifacts land in a Ray temp folder.

Example:
    >>> is_local_store("sqlite:////abs/runs/demo/mlflow.db"), is_local_store("http://mlflow:5000")
    (True, False)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def mlflow_client(tracking_uri: str) -> Any:
    """An `MlflowClient` pinned to ``tracking_uri`` for both tracking and the model registry."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def is_local_store(tracking_uri: str) -> bool:
    """Whether the client itself writes artifacts (sqlite, file, a database URI), not a tracking server."""
    return not tracking_uri.startswith(("http://", "https://", "databricks"))


def ensure_experiment(client: Any, name: str, artifact_root: Path | None) -> str:
    """The id of experiment ``name``, created if missing; with a local store its artifacts go under
    ``artifact_root`` (absolute), where a tracking server chooses its own."""
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    local = artifact_root is not None and is_local_store(client.tracking_uri)
    location = Path(artifact_root).resolve().as_uri() if local else None
    return client.create_experiment(name, artifact_location=location)


__all__ = ["ensure_experiment", "is_local_store", "mlflow_client"]
