"""MLflow for training: one experiment per recipe, one run per training run, the model registry.

The driver creates the experiment and the run before ``fit()`` (so a worker restart never makes a
second run, and the artifact root is never a Ray temp folder); rank 0 logs step metrics into that
run id; after ``fit()`` the driver logs the final model, registers a version and sets its alias.

Example:
    >>> tracker = Tracker("sqlite:////abs/runs/demo/mlflow.db")  # doctest: +SKIP
    >>> run_id = tracker.start_run("demo", recipe_dict, Path("/abs/runs/demo/mlartifacts"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from l2ray.errors import L2rayError
from l2ray.mlflow_store import ensure_experiment, mlflow_client

CANDIDATE_ALIAS = "candidate"
REGISTERED_FOR_TAG = "checkpoint"
"""The version tag naming the checkpoint a version was registered from: a rerun finds its version."""
_PARAM_BATCH = 100  # MLflow accepts at most 100 params per log_batch call
_METRIC_BATCH = 1000  # ... and at most 1000 metrics
_PARAM_VALUE_LIMIT = 6000


class Tracker:
    """An MLflow client pinned to one tracking URI (never the process-global one)."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self.client = mlflow_client(tracking_uri)

    def start_run(
        self,
        experiment: str,
        params: dict[str, Any],
        artifact_root: Path | None,
        run_name: str | None = None,
        artifacts: dict[str, Any] | None = None,
    ) -> str:
        """Create (or reuse) the experiment, open a run, log flattened params and JSON artifacts.

        ``artifact_root`` is used for local stores (sqlite, file); a tracking server chooses its own.
        """
        experiment_id = ensure_experiment(self.client, experiment, artifact_root)
        run = self.client.create_run(experiment_id, run_name=run_name)
        run_id = run.info.run_id
        self.log_params(run_id, params)
        for name, content in (artifacts or {}).items():
            self.log_json(run_id, name, content)
        return run_id

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = [Param(k, _param_value(v)) for k, v in sorted(flatten(params).items())]
        for start in range(0, len(flat), _PARAM_BATCH):
            self.client.log_batch(run_id, params=flat[start : start + _PARAM_BATCH])

    def log_json(self, run_id: str, name: str, content: Any) -> None:
        """Log ``content`` as the artifact ``name`` (a JSON or YAML text, by the name's suffix)."""
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / name
            if isinstance(content, str):
                path.write_text(content, encoding="utf-8")
            else:
                path.write_text(json.dumps(content, indent=2, ensure_ascii=False), encoding="utf-8")
            self.client.log_artifact(run_id, str(path))

    def log_metric_history(self, run_id: str, history: list[tuple[int, int, dict[str, float]]]) -> None:
        """``(step, timestamp in ms, metrics)`` entries in as few writes as MLflow allows (1000 a batch)."""
        from mlflow.entities import Metric

        batch = [
            Metric(name, float(value), timestamp, step)
            for step, timestamp, metrics in history
            for name, value in metrics.items()
        ]
        for start in range(0, len(batch), _METRIC_BATCH):
            self.client.log_batch(run_id, metrics=batch[start : start + _METRIC_BATCH])

    def reopen(self, run_id: str) -> None:
        """Mark a stopped run as running again (``--resume``)."""
        self.client.update_run(run_id, status="RUNNING")

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def log_and_register(
        self,
        run_id: str,
        model: Any,
        tokenizer: Any,
        registered_model: str,
        tags: dict[str, str],
    ) -> tuple[str, str]:
        """Log ``model`` with ``mlflow.transformers`` into the run, register a new version with ``tags``
        and point the ``candidate`` alias at it. Returns ``(version, "models:/NAME/VERSION")``.

        Registration is never half done: the version is created with its tags in one call, only after
        every artifact is uploaded, and the alias moves last. A rerun after a failure (the server died
        mid-way) reuses the version this run registered for this checkpoint (`REGISTERED_FOR_TAG`)
        instead of making a second one; a failure that outlasts MLflow's retries raises
        `RegistrationError`."""
        import mlflow

        with _registration_step(self.tracking_uri, registered_model, run_id):
            version = self._registered_before(registered_model, run_id, tags)
            if version is None:
                # Global store for both: a local registry looks the logged model up through it.
                with _global_store(self.tracking_uri):
                    with mlflow.start_run(run_id=run_id):
                        info = mlflow.transformers.log_model(
                            transformers_model={"model": model, "tokenizer": tokenizer},
                            name="model",
                            task="text-generation",
                            pip_requirements=pip_requirements(),
                        )
                    version = self._create_version(
                        registered_model, info.model_uri, run_id, tags, info.model_id
                    )
            return self._alias(registered_model, version)

    def register_reference(
        self, run_id: str, source: str, registered_model: str, tags: dict[str, str]
    ) -> tuple[str, str]:
        """Register a new version whose artifacts stay where they are (``source``: a shared path or
        object-store URI laid out like an ``mlflow.transformers`` model), tag it and point the
        ``candidate`` alias at it: tens of GB never stream through the tracking server. Rerun-safe
        as `log_and_register` is."""
        with _registration_step(self.tracking_uri, registered_model, run_id):
            version = self._registered_before(registered_model, run_id, tags)
            if version is None:
                version = self._create_version(registered_model, source, run_id, tags, None)
            return self._alias(registered_model, version)

    def _registered_before(self, registered_model: str, run_id: str, tags: dict[str, str]) -> str | None:
        """The version this run already registered for the same checkpoint, if an earlier attempt got
        that far."""
        found = self.client.search_model_versions(f"name='{registered_model}' and run_id='{run_id}'")
        same = [v for v in found if v.tags.get(REGISTERED_FOR_TAG) == tags.get(REGISTERED_FOR_TAG)]
        return str(min(int(v.version) for v in same)) if same else None

    def _create_version(
        self, registered_model: str, source: str, run_id: str, tags: dict[str, str], model_id: str | None
    ) -> str:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(registered_model)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = self.client.create_model_version(
            registered_model, source, run_id=run_id, tags=tags, model_id=model_id
        )
        return str(version.version)

    def _alias(self, registered_model: str, version: str) -> tuple[str, str]:
        self.client.set_registered_model_alias(registered_model, CANDIDATE_ALIAS, version)
        return version, f"models:/{registered_model}/{version}"


class RegistrationError(L2rayError):
    """Registering a trained model failed (the MLflow server stayed unreachable past its retries)."""


@contextmanager
def _registration_step(tracking_uri: str, registered_model: str, run_id: str) -> Iterator[None]:
    """Turn a registry that stopped answering mid-registration into one `RegistrationError` saying
    what state it left and how to finish."""
    from mlflow.exceptions import MlflowException
    from requests.exceptions import RequestException

    try:
        yield
    except (MlflowException, RequestException) as exc:
        if not _unavailable(exc):
            raise
        reason = str(exc).strip().splitlines()[0][:300]
        raise RegistrationError(
            f"registering {registered_model!r} from run {run_id} at {tracking_uri} failed ({reason}); the "
            f"registry holds either no version of this run or a complete one without @{CANDIDATE_ALIAS}: "
            "bring the server back and run the stage again (it reuses that version)"
        ) from None


class StepMetricWriter:
    """Rank 0's step metrics, written to the MLflow run in batches.

    Every step is recorded, but a write costs a database round trip (~10–20 ms on sqlite, more to a
    remote server), which on a small model is a sizeable share of a step. Steps are therefore held
    back and written together once ``flush_every_s`` has passed since the last write, and whenever
    the loop calls ``flush`` (before a checkpoint, at the end, on a failure). ``flush_every_s=0``
    writes every step as it comes. Each point keeps the time its step finished.

    A failing attempt still writes the steps it finished, for the post-mortem; those past its last
    checkpoint are trained again by the restarted attempt, so such steps carry one point per attempt.

    Example:
        >>> writer = StepMetricWriter(Tracker(uri), run_id, flush_every_s=10.0)  # doctest: +SKIP
        >>> writer.add({"loss": 2.3}, step=1)  # doctest: +SKIP
        >>> writer.flush()  # doctest: +SKIP
    """

    def __init__(self, tracker: Tracker, run_id: str, flush_every_s: float) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self.flush_every_s = flush_every_s
        self._pending: list[tuple[int, int, dict[str, float]]] = []
        self._last_write = time.monotonic()

    def add(self, metrics: dict[str, float], step: int) -> None:
        self._pending.append((step, int(time.time() * 1000), dict(metrics)))
        if time.monotonic() - self._last_write >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self.tracker.log_metric_history(self.run_id, self._pending)
            self._pending = []
        self._last_write = time.monotonic()


def _unavailable(exc: Exception) -> bool:
    """A server that did not answer (MLflow's client wraps a transport failure that outlasted its
    retries as "API request to … failed with exception …") or answered that it is unavailable."""
    if not hasattr(exc, "error_code"):
        return True  # requests' own error, from an artifact upload
    transport = str(exc).startswith("API request to ") and " failed with " in str(exc)
    return transport or exc.error_code in ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED")


def pip_requirements() -> list[str]:
    """Explicit requirements for the logged model (inference would otherwise look for torchvision)."""
    import safetensors
    import tokenizers
    import torch
    import transformers

    return [
        f"torch=={torch.__version__.split('+')[0]}",
        f"transformers=={transformers.__version__}",
        f"tokenizers=={tokenizers.__version__}",
        f"safetensors=={safetensors.__version__}",
    ]


def code_version() -> str:
    """``l2ray <version>`` plus the git commit of the source tree when there is one (``+dirty`` if edited)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = f"l2ray {version('l2ray')}"
    except PackageNotFoundError:  # running from a source tree that was never installed
        text = "l2ray (not installed)"
    root = Path(__file__).resolve().parents[2]
    if not (root / "l2ray" / "__init__.py").is_file() or not (root / "pyproject.toml").is_file():
        return text  # an installed copy: the folder above it may be some other repository
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return text
    return f"{text} ({commit}{'+dirty' if dirty else ''})" if commit else text


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-5}}`` → ``{"train.lr": 1e-5}`` (lists and ``None`` kept as values).

    >>> flatten({"a": {"b": 1, "c": [1, 2]}, "d": None})
    {'a.b': 1, 'a.c': [1, 2], 'd': None}
    """
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _PARAM_VALUE_LIMIT else text[: _PARAM_VALUE_LIMIT - 1] + "…"


@contextmanager
def _global_store(uri: str) -> Iterator[None]:
    """Point MLflow's process-global tracking and registry URIs at ``uri`` for one call.

    ``mlflow.transformers.log_model`` only talks to the global store. Restoring through the public
    setters would pin whatever the getters resolved (and export it as ``MLFLOW_*_URI``), so a caller
    that never set a registry URI would keep ours; the module globals and variables are restored as
    they were instead (MLflow has no public "unset").
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved_globals = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    saved_env = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved_globals
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
