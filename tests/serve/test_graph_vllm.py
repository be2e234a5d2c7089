"""The graph with ``engine: vllm`` in its direct shape (``graph: direct``: vLLM's AsyncLLM inside the
Ingress replica; the split shape is served on vLLM in tests/real) and the intervention as its logits
processor. Official openai client: plain, streaming with the final usage chunk, ``extra_body``
intervention; budgets hold for 8 concurrent requests in one continuous batch; an engine that dies is
a 503 to retry and fails the replica's health check."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import openai
import pytest
from local_servers import free_port
from serve_support import ancestors, processes_named

pytest.importorskip("vllm")
pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is 12+30?"}]


@pytest.fixture(scope="module")
def vllm_server(ray_cluster, switching_student_path):
    from ray import serve

    from l2ray.serve.app import build_app

    port = free_port()
    args = {
        "model": str(switching_student_path),
        "engine": "vllm",
        "graph": "direct",
        "vllm": {"dtype": "float32", "enforce_eager": True, "max_num_seqs": 16, "stream_interval": 4},
        "num_cpus": 0.5,
        "router_num_cpus": 0.1,
        "api_keys_env": None,
        "max_tokens_limit": 256,
    }
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(args), name="l2ray-vllm", route_prefix="/")
    yield f"http://127.0.0.1:{port}/v1"
    serve.shutdown()


@pytest.fixture(scope="module")
def client(vllm_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=vllm_server, api_key="unused", max_retries=0)


def test_plain_chat_and_extra_body_intervention(client):
    plain = client.chat.completions.create(model="l2ray", temperature=0, messages=QUESTION, max_tokens=24)
    assert plain.choices[0].finish_reason == "length"
    assert plain.usage.completion_tokens == 24
    forced = client.chat.completions.create(
        model="l2ray", temperature=0, messages=QUESTION, max_tokens=24, extra_body={"l2ray": {"force": "zh"}}
    )
    assert forced.usage.model_dump()["tag_mix"] == {"zh": 1.0}
    assert plain.usage.model_dump()["tag_mix"] != {"zh": 1.0}


def test_streaming_ends_with_a_usage_chunk_without_choices(client):
    stream = client.chat.completions.create(
        model="l2ray",
        temperature=0,
        messages=QUESTION,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"l2ray": {"max_thinking_tokens": 6}},
    )
    chunks = list(stream)
    *content, last = chunks
    assert last.choices == [] and last.usage.completion_tokens == 16
    assert last.usage.model_dump()["thinking_tokens"] == 6
    assert all(chunk.usage is None for chunk in content)
    assert content[-1].choices[0].finish_reason == "length"


def test_a_stream_carries_the_engine_interval_of_tokens_per_message_and_the_same_text(client):
    """stream_interval 4: the first token at once, then 4 a message — 24 tokens in at most 7 messages
    with text (one a token would be 24), and the text of the same request unstreamed."""
    options = {"l2ray": {"show_thinking": True}}
    whole = client.chat.completions.create(
        model="l2ray", temperature=0, messages=QUESTION, max_tokens=24, extra_body=options
    )
    stream = client.chat.completions.create(
        model="l2ray", temperature=0, messages=QUESTION, max_tokens=24, stream=True, extra_body=options
    )
    deltas = [c.choices[0].delta.model_dump() for c in stream if c.choices]
    texts = [(d.get("reasoning_content") or "") + (d.get("content") or "") for d in deltas]
    message = whole.choices[0].message.model_dump()
    assert "".join(texts) == (message.get("reasoning_content") or "") + (message.get("content") or "")
    assert 2 <= sum(1 for t in texts if t) <= 7, texts


def test_budgets_hold_under_eight_concurrent_requests(vllm_server):
    async def run() -> list[dict]:
        client = openai.AsyncOpenAI(base_url=vllm_server, api_key="unused", max_retries=0)
        calls = [
            client.chat.completions.create(
                model="l2ray",
                temperature=0,
                messages=QUESTION,
                max_tokens=30,
                extra_body={"l2ray": {"max_thinking_tokens": budget}},
            )
            for budget in range(3, 11)
        ]
        responses = await asyncio.gather(*calls)
        await client.close()
        return [r.usage.model_dump() for r in responses]

    usages = asyncio.run(run())
    assert [u["thinking_tokens"] for u in usages] == list(range(3, 11))
    assert all(u["completion_tokens"] == 30 for u in usages)


def test_model_cards_media_type_and_depth_on_the_wire(vllm_server):
    import httpx

    assert httpx.get(f"{vllm_server}/models/l2ray").json()["id"] == "l2ray"
    assert httpx.get(f"{vllm_server}/models/gpt-4o").status_code == 404
    body = '{"model": "l2ray", "messages": [{"role": "user", "content": "1+1?"}]}'
    as_text = httpx.post(
        f"{vllm_server}/chat/completions", content=body, headers={"Content-Type": "text/plain"}
    )
    assert as_text.status_code == 415
    nested = '{"model": "l2ray", "x": ' + "[" * 5000 + "]" * 5000 + "}"
    deep = httpx.post(
        f"{vllm_server}/chat/completions", content=nested, headers={"Content-Type": "application/json"}
    )
    assert deep.status_code == 400 and "nests deeper" in deep.json()["error"]["message"]


def test_an_engine_that_dies_is_a_503_to_retry_and_fails_the_health_check(vllm_server, ray_cluster):
    """Runs last here: it kills the engine core process of the app's replica."""
    import httpx
    from ray import serve

    [replica] = processes_named("ray::ServeReplica:l2ray-vllm:Ingress")
    cores = [pid for pid in processes_named("VLLM::EngineCore") if replica in ancestors(pid)]
    assert len(cores) == 1, cores
    os.kill(cores[0], signal.SIGKILL)
    body = {"model": "l2ray", "messages": QUESTION, "max_tokens": 8, "temperature": 0}
    deadline = time.monotonic() + 60
    while (reply := httpx.post(f"{vllm_server}/chat/completions", json=body, timeout=60)).status_code == 200:
        assert time.monotonic() < deadline, "the engine's death went unnoticed"
        time.sleep(0.5)
    error = reply.json()["error"]
    assert reply.status_code == 503 and reply.headers["retry-after"].isdigit(), reply.text
    assert error["type"] == "server_error" and "Error" not in error["message"]
    ingress = serve.get_deployment_handle("Ingress", app_name="l2ray-vllm")
    with pytest.raises(Exception, match=r"EngineDeadError"):  # what Serve's periodic check calls
        ingress.check_health.remote().result(timeout_s=30)
