"""Fixtures for evaluation tests: fake chat servers (real HTTP on 127.0.0.1) and a real ``mlflow server``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from evalkit import Behaviour, FakeChatServer
from local_servers import MlflowServer, mlflow_server_in


@pytest.fixture
def chat_server() -> Iterator[Callable[..., FakeChatServer]]:
    """Start fake chat servers (`FakeChatServer` arguments); all are shut down after the test."""
    servers: list[FakeChatServer] = []

    def start(behaviour: Behaviour, **options: Any) -> FakeChatServer:
        servers.append(FakeChatServer(behaviour, **options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` on 127.0.0.1 for this test; call ``ready()`` for its URL."""
    with mlflow_server_in(tmp_path / "server") as server:
        yield server
