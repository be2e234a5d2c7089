"""MLflow plumbing shared by training, evaluation, promotion and the student resolver.

One rule for every stage: a client is pinned to one URI for tracking *and* the registry (never the
process-global store), and an experiment is created on the driver with an absolute artifact root when
the client itself writes artifacts (a local store), so no run's artifacts land in a Ray temp folder.

Credentials for a server behind MLflow's auth app come from the environment only
(``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, or ``MLFLOW_TRACKING_TOKEN``), read by
MLflow's own client on every request: never from a recipe (a tracking URI carrying them is refused,
since the recipe is logged) and never written anywhere by l2ray. `check_store` asks the server once per
process and identity, so a missing or wrong password fails in one line before a stage does any work.

Example:
    >>> is_local_store("sqlite:////abs/runs/demo/mlflow.db"), is_local_store("http://mlflow:5000")
    (True, False)
"""

from __future__ import annotations

import functools
import hashlib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from l2ray.errors import L2rayError

SERVER_TIMEOUT_S = 5.0
AUTH_TIMEOUT_S = 30.0
"""The credentials check does real work on the server (a password hash per request): more time."""


class TrackingStoreError(L2rayError):
    """An MLflow store that cannot be opened (a bad database file, an unwritable path, no server)."""


class TrackingAuthError(TrackingStoreError):
    """An MLflow server that refuses l2ray's credentials: none in the environment, or wrong ones."""


class RegistryPermissionError(L2rayError, PermissionError):
    """The MLflow user l2ray runs as may not do what a stage asked (its permissions on a model)."""


def mlflow_client(tracking_uri: str) -> Any:
    """An `MlflowClient` pinned to ``tracking_uri`` for both tracking and the model registry.

    The store is opened once per process first (`check_store`), so a store that cannot be opened
    fails in one line naming the fix, not deep inside a stage (or after minutes of HTTP retries)."""
    from mlflow import MlflowClient

    check_store(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def check_store(tracking_uri: str) -> None:
    """Open the store at ``tracking_uri`` (a local database is created if missing; a server must answer
    ``/health`` and accept the environment's credentials); raise `TrackingStoreError` (`TrackingAuthError`
    for credentials) naming the URI and the fix when it cannot be opened."""
    from urllib.parse import urlparse

    if urlparse(tracking_uri).password is not None:
        raise TrackingStoreError(
            "the tracking URI carries a password: remove it from tracking.uri / MLFLOW_TRACKING_URI and "
            "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD instead (a recipe is logged)"
        )
    _check_store(tracking_uri, _identity(tracking_uri))


def current_user() -> str | None:
    """The MLflow user the environment names (``MLFLOW_TRACKING_USERNAME``, or MLflow's credentials
    file), for messages; ``None`` when there is none."""
    from mlflow.utils.credentials import read_mlflow_creds

    return read_mlflow_creds().username


def permission_denied(exc: Exception) -> bool:
    """Whether an MLflow error is the server's 403 (the user lacks a permission)."""
    return getattr(exc, "error_code", None) == "PERMISSION_DENIED"


def _identity(tracking_uri: str) -> str:
    """Who the environment says l2ray is (a digest: the password never becomes a cache key as is)."""
    from mlflow.utils.credentials import get_default_host_creds

    creds = get_default_host_creds(tracking_uri)
    secret = f"{creds.username}\0{creds.password}\0{creds.token}".encode()
    return hashlib.sha256(secret).hexdigest()


@functools.cache
def _check_store(tracking_uri: str, identity: str) -> None:
    fix = "set tracking.uri (or MLFLOW_TRACKING_URI) to sqlite:////abs/path/mlflow.db or a running server"
    if tracking_uri.startswith("databricks"):
        return
    if not is_local_store(tracking_uri):
        try:
            urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=SERVER_TIMEOUT_S).close()
        except urllib.error.HTTPError:
            pass  # it answered (perhaps asking for credentials): the server is there
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingStoreError(
                f"MLflow server {tracking_uri} does not answer ({reason}); start it "
                f"(`mlflow server --port {_port(tracking_uri)}`) or {fix}"
            ) from None
        _check_credentials(tracking_uri)
        return
    from mlflow import MlflowClient

    try:
        MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
    except Exception as exc:  # sqlalchemy, OSError, MlflowException: whatever stops the store opening
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackingStoreError(f"MLflow store {tracking_uri} cannot be opened ({reason}); {fix}") from None


def _check_credentials(tracking_uri: str) -> None:
    """One authenticated read; a 401 becomes `TrackingAuthError` (a server without the auth app
    ignores credentials and answers 200)."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    creds = get_default_host_creds(tracking_uri)
    try:
        response = http_request(
            creds,
            "/api/2.0/mlflow/experiments/search",
            "GET",
            max_retries=0,
            timeout=AUTH_TIMEOUT_S,
            raise_on_status=False,
            params={"max_results": 1},
        )
    except Exception as exc:  # MlflowException around a connection or read error
        reason = str(exc).strip().splitlines()[0][:200]
        raise TrackingStoreError(f"MLflow server {tracking_uri} did not answer a read ({reason})") from None
    if response.status_code != 401:
        return
    if creds.username is None and creds.token is None:
        raise TrackingAuthError(
            f"MLflow server {tracking_uri} requires authentication and no credentials are set: export "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (on Kubernetes, from the Secret)"
        )
    who = f"user {creds.username!r}" if creds.username else "the MLFLOW_TRACKING_TOKEN"
    raise TrackingAuthError(
        f"MLflow server {tracking_uri} refused {who} (401): check MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD, or ask the server's admin to create the user"
    )


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
    "RegistryPermissionError",
    "TrackingAuthError",
    "TrackingStoreError",
    "check_store",
    "current_user",
    "ensure_experiment",
    "is_local_store",
    "logged_steps",
    "mlflow_client",
    "permission_denied",
]
