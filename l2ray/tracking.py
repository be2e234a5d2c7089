"""MLflow plumbing shared by training, evaluation, promotion and the student resolver.

One rule for every stage: a client is pinned to one URI for tracking *and* the registry (never the
process-global store), and an experiment is created on the driver with an absolute artifact root when
the client itself writes artifacts (a local store), so no run's artifacts land in a Ray temp folder.

Example:
    >>> is_local_store("sqlite:////abs/runs/demo/mlflow.db"), is_local_store("http://mlflow:5000")
    (True, False)
"""

from __future__ import annotations

import functools
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from l2ray.errors import L2rayError

SERVER_TIMEOUT_S = 5.0


class TrackingStoreError(L2rayError):
    """An MLflow store that cannot be opened (a bad database file, an unwritable path, no server)."""


def mlflow_client(tracking_uri: str) -> Any:
    """An `MlflowClient` pinned to ``tracking_uri`` for both tracking and the model registry.

    The store is opened once per process first (`check_store`), so a store that cannot be opened
    fails in one line naming the fix, not deep inside a stage (or after minutes of HTTP retries)."""
    from mlflow import MlflowClient

    check_store(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@functools.cache
def check_store(tracking_uri: str) -> None:
    """Open the store at ``tracking_uri`` (a local database is created if missing; a server must answer
    ``/health``); raise `TrackingStoreError` naming the URI and the fix when it cannot be opened."""
    fix = "set tracking.uri (or MLFLOW_TRACKING_URI) to sqlite:////abs/path/mlflow.db or a running server"
    if tracking_uri.startswith("databricks"):
        return
    if not is_local_store(tracking_uri):
        try:
            urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=SERVER_TIMEOUT_S).close()
        except urllib.error.HTTPError:
            return  # it answered (perhaps asking for credentials): the server is there
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingStoreError(
                f"MLflow server {tracking_uri} does not answer ({reason}); start it "
                f"(`mlflow server --port {_port(tracking_uri)}`) or {fix}"
            ) from None
        return
    from mlflow import MlflowClient

    try:
        MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
    except Exception as exc:  # sqlalchemy, OSError, MlflowException: whatever stops the store opening
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackingStoreError(f"MLflow store {tracking_uri} cannot be opened ({reason}); {fix}") from None


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


def logged_steps(client: Any, run_id: str, metric: str = "loss") -> tuple[int, str]:
    """``(latest step, "loss 1.234")`` of ``metric`` as logged so far in run ``run_id`` (``(0, "")``
    before the first point): what a driver polls to show training's progress."""
    history = client.get_metric_history(run_id, metric)
    if not history:
        return 0, ""
    latest = max(history, key=lambda point: point.step)
    return latest.step, f"{metric} {latest.value:.3f}"


def _port(uri: str) -> int:
    from urllib.parse import urlparse

    return urlparse(uri).port or 5000


__all__ = [
    "TrackingStoreError",
    "check_store",
    "ensure_experiment",
    "is_local_store",
    "logged_steps",
    "mlflow_client",
]
