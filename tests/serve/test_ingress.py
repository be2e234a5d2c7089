"""The ingress without a cluster: configured API keys fail closed, and an error in the middle of a
stream reaches the client as an OpenAI error event followed by ``[DONE]``."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import openai
import pytest

from l2ray.recipe import ServeConfig
from l2ray.serve.ingress import Ingress, sse_events
from l2ray.serve.security import ApiKeyConfigError, load_keys

KEYS_ENV = "L2RAY_TEST_INGRESS_KEYS"


def test_without_key_configuration_the_server_is_open(monkeypatch):
    monkeypatch.delenv(KEYS_ENV, raising=False)
    config = ServeConfig()
    assert config.api_keys_env is None and config.api_keys_file is None
    assert load_keys(config.api_keys_env, config.api_keys_file) == []


@pytest.mark.parametrize(
    "value, state", [(None, "is not set"), ("", "holds no key"), (" ,\n, ", "holds no key")]
)
def test_a_named_key_variable_without_keys_refuses_to_start(monkeypatch, value, state):
    if value is None:
        monkeypatch.delenv(KEYS_ENV, raising=False)
    else:
        monkeypatch.setenv(KEYS_ENV, value)
    with pytest.raises(ApiKeyConfigError) as caught:
        load_keys(KEYS_ENV, None)
    message = str(caught.value)
    assert f"${KEYS_ENV}" in message and state in message
    assert f"Set {KEYS_ENV} to comma-separated keys" in message and "api_keys_env to null" in message


def test_the_ingress_replica_does_not_start_open(monkeypatch):
    monkeypatch.delenv(KEYS_ENV, raising=False)
    ingress_class = Ingress.func_or_class.__mro__[1]  # the class under Serve's ASGI wrapper
    with pytest.raises(ApiKeyConfigError, match=KEYS_ENV):
        ingress_class(None, ServeConfig(api_keys_env=KEYS_ENV))
    monkeypatch.setenv(KEYS_ENV, "sk-one, sk-two")
    assert ingress_class(None, ServeConfig(api_keys_env=KEYS_ENV)).guard.enabled


def test_keys_come_from_the_variable_and_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv(KEYS_ENV, "sk-one, sk-two\nsk-three")
    key_file = tmp_path / "keys"
    key_file.write_text("sk-four\n\n  sk-five  \n")
    assert load_keys(KEYS_ENV, str(key_file)) == ["sk-one", "sk-two", "sk-three", "sk-four", "sk-five"]


def test_a_missing_or_empty_key_file_refuses_to_start(tmp_path):
    with pytest.raises(ApiKeyConfigError, match="does not exist; create it"):
        load_keys(None, str(tmp_path / "absent"))
    empty = tmp_path / "empty"
    empty.write_text("\n  \n")
    with pytest.raises(ApiKeyConfigError, match="holds no key"):
        load_keys(None, str(empty))


CHUNK = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 0,
    "model": "l2ray",
    "choices": [{"index": 0, "delta": {"content": "Fifty"}, "finish_reason": None}],
}


async def failing_after_one_chunk():
    yield CHUNK
    raise RuntimeError("the generator replica died")


def stream_with_failure(monkeypatch) -> tuple[list[str], list[int], list[logging.LogRecord]]:
    """The SSE events of a stream that fails after one chunk, the limiter releases, and what was logged."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append
    logger = logging.getLogger("ray.serve")
    monkeypatch.setattr(logger, "handlers", [*logger.handlers, handler])
    released: list[int] = []

    async def collect() -> list[str]:
        return [event async for event in sse_events(failing_after_one_chunk(), lambda: released.append(1))]

    return asyncio.run(collect()), released, records


def test_an_error_mid_stream_is_sent_as_an_error_event_then_done(monkeypatch):
    events, released, records = stream_with_failure(monkeypatch)
    assert events[0] == f"data: {json.dumps(CHUNK)}\n\n"
    assert events[-1] == "data: [DONE]\n\n" and len(events) == 3
    error = json.loads(events[1].removeprefix("data: "))["error"]
    assert error["type"] == "server_error"
    assert error["message"] == "internal server error while streaming (logged)"  # no internals leak
    assert "RuntimeError" not in error["message"]
    assert released == [1]  # the key's concurrency slot is freed
    assert any(r.exc_info and "replica died" in str(r.exc_info[1]) for r in records)


def test_the_official_client_raises_the_streamed_error(monkeypatch):
    events, _, _ = stream_with_failure(monkeypatch)
    body = "".join(events).encode()
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)
    )
    client = openai.OpenAI(
        base_url="http://l2ray.invalid/v1", api_key="sk-test", http_client=httpx.Client(transport=transport)
    )
    stream = client.chat.completions.create(
        model="l2ray", messages=[{"role": "user", "content": "7*8?"}], stream=True
    )
    seen = []
    with pytest.raises(openai.APIError, match="internal server error while streaming"):
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content)
    assert seen == ["Fifty"]


def test_a_clean_stream_ends_with_done():
    async def one_chunk():
        yield CHUNK

    async def collect() -> list[str]:
        return [event async for event in sse_events(one_chunk(), lambda: None)]

    assert asyncio.run(collect()) == [f"data: {json.dumps(CHUNK)}\n\n", "data: [DONE]\n\n"]


def test_a_body_must_be_json_and_shallow():
    from l2ray.serve.ingress import MAX_JSON_DEPTH, parse_json_body
    from l2ray.serve.protocol import RequestError

    assert parse_json_body(b'{"a": [1]}', "application/json; charset=utf-8") == {"a": [1]}
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
        with pytest.raises(RequestError) as caught:
            parse_json_body(b"{}", content_type)
        assert caught.value.status == 415
    just_too_deep = b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)
    parser_breaking = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    for raw in (just_too_deep, parser_breaking):
        with pytest.raises(RequestError, match="nests deeper") as caught:
            parse_json_body(raw, "application/json")
        assert caught.value.status == 400
    assert parse_json_body(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, "application/json")
