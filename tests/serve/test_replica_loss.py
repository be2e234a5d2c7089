"""A Generator replica killed under load: clients get 503 with ``Retry-After`` (a stream: a 503 error
event, then ``[DONE]``) — never a 500 naming Ray's exceptions, never silence — ``/readyz`` says 503
until Serve's replacement can answer, and then the server answers again. And a client that hangs up
mid-stream is no error in the server's logs."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from serve_support import API_KEY, processes_named

pytestmark = pytest.mark.slow
HEADERS = {"Authorization": f"Bearer {API_KEY}"}
QUESTION = [{"role": "user", "content": "What is 2+3?"}]


def chat(url: str, stream: bool = False, max_tokens: int = 200) -> httpx.Response:
    body = {
        "model": "l2ray",
        "messages": QUESTION,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    }
    return httpx.post(f"{url}/chat/completions", json=body, headers=HEADERS, timeout=120)


def assert_retryable(response: httpx.Response) -> None:
    error = response.json()["error"]
    assert response.status_code == 503 and response.headers["retry-after"].isdigit(), response.text
    assert (
        error["type"] == "server_error" and "Error" not in error["message"] and "ray" not in error["message"]
    )


def serve_log_problems(ray_cluster) -> list[str]:
    """ERROR lines and unretrieved-future warnings in this cluster's Serve logs so far."""
    folder = Path(ray_cluster._private.worker.global_worker.node.get_logs_dir_path()) / "serve"
    return [
        f"{log.name}: {line.strip()}"
        for log in folder.glob("*.log")
        for line in log.read_text(errors="replace").splitlines()
        if " ERROR " in line or "never retrieved" in line
    ]


def test_a_client_hanging_up_mid_stream_is_no_error(server, ray_cluster):
    before = serve_log_problems(ray_cluster)
    body = {"model": "l2ray", "messages": QUESTION, "max_tokens": 200, "temperature": 0, "stream": True}
    for _ in range(2):
        with httpx.stream(
            "POST", f"{server}/chat/completions", json=body, headers=HEADERS, timeout=60
        ) as reply:
            for number, _line in enumerate(reply.iter_lines()):
                if number == 3:
                    break  # the client goes away with the stream half read
    time.sleep(3)  # what the replicas log about it has been written
    assert serve_log_problems(ray_cluster) == before
    assert chat(server, max_tokens=2).status_code == 200  # and the server is none the worse


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the replica in Linux /proc")
def test_a_replica_killed_under_load_is_503_and_the_server_recovers(server):
    base = server.removesuffix("/v1")
    assert httpx.get(f"{base}/readyz").status_code == 200 and chat(server, max_tokens=2).status_code == 200
    with ThreadPoolExecutor(6) as pool:
        plain = [pool.submit(chat, server) for _ in range(4)]
        streams = [pool.submit(chat, server, True) for _ in range(2)]
        time.sleep(1.5)  # the requests are decoding
        [pid] = processes_named("ray::ServeReplica:l2ray:Generator")
        os.kill(pid, signal.SIGKILL)
        answered = [f.result() for f in plain]
        streamed = [f.result() for f in streams]
    for response in answered:
        if response.status_code != 200:  # a request that finished before the kill is a plain answer
            assert_retryable(response)
    assert any(r.status_code == 503 for r in answered + streamed), [r.status_code for r in answered]
    for response in streamed:
        events = [
            line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")
        ]
        assert events[-1] == "[DONE]"
        errors = [json.loads(e)["error"] for e in events[:-1] if "error" in json.loads(e)]
        assert response.status_code == 503 or (errors and errors[0]["code"] == "model_unavailable")
    waiting = httpx.get(f"{base}/readyz")
    if waiting.status_code != 200:  # Serve had not replaced the replica yet
        assert_retryable(waiting)
        assert_retryable(chat(server))  # at once, not after the replacement's start-up
    deadline = time.monotonic() + 240
    while httpx.get(f"{base}/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the replica was never replaced"
        time.sleep(2)
    assert chat(server, max_tokens=4).status_code == 200
