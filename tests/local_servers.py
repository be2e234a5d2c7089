"""Real local servers the tests start: free ports and an ``mlflow server`` process.

A module of its own (tests/ is on the import path through its conftest), shared by the training,
evaluation, serving and job tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """A started ``mlflow server`` process; ``ready`` waits for its health check and returns its URL.

    It boots while the test does its other work (Ray, a model): call ``ready()`` when the URL is needed.
    """

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
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlflow server at {self.url} not healthy after {timeout_s}s")
            time.sleep(0.5)


@contextlib.contextmanager
def mlflow_server_in(folder: Path) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` on a free 127.0.0.1 port, its sqlite store and artifacts in ``folder``.

    It runs in its own session, so the end stops the server and its uvicorn worker and nothing else
    (SIGTERM, then SIGKILL if it lingers).
    """
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "server.log"
    url = f"http://127.0.0.1:{free_port()}"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination", str(folder / "artifacts"),
        "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1], "--workers", "1",
    ]  # fmt: skip
    with log.open("w") as log_file:
        process = subprocess.Popen(
            command,
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            start_new_session=True,
            env={**os.environ, "MLFLOW_TRACKING_URI": ""},
        )
    try:
        yield MlflowServer(process, url, log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
