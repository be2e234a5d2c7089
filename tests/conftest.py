"""Shared fixtures. One Ray cluster per test session (starting Ray costs ~15 s on 2 cores)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Set before anything imports Ray, transformers or MLflow.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster for the whole session (never attaches to a cluster started elsewhere)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def student_path(tmp_path_factory) -> Path:
    """The offline student, built once per session."""
    from l2ray.student.build import build_student

    return build_student(tmp_path_factory.mktemp("student") / "tiny")
