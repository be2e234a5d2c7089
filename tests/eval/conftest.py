"""Fixtures for evaluation tests: fake chat servers (real HTTP on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from evalkit import Behaviour, FakeChatServer


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
