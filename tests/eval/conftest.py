"""Fixtures for evaluation tests: fake chat servers (real HTTP on 127.0.0.1) and a real ``mlflow server``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from evalkit import Behaviour, FakeChatServer, free_port


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


class MlflowServer:
    """A started ``mlflow server`` process; `ready` waits for its health check and returns its URL."""

    def __init__(self, process: subprocess.Popen, url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log

    def ready(self, timeout_s: float = 180.0) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self.url
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.5)


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` on 127.0.0.1 (free port), killed with its process group at the end.

    It starts without waiting, so its start-up overlaps the test's other work; call ``ready()``.
    """
    port = free_port()
    store = tmp_path / "server"
    store.mkdir()
    log = store / "server.log"
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{store / 'mlflow.db'}",
            "--artifacts-destination",
            str(store / "artifacts"),
        ],
        cwd=store,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        start_new_session=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": ""},
    )
    try:
        yield MlflowServer(process, f"http://127.0.0.1:{port}", log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
