"""The ReasoningController in-process on the offline student, no cluster: ``stop`` strings (plain
and streamed, both generator paths), per-request seeds, and the generator_url path passing sampling
and logit_bias on and streaming per segment. The real graph is exercised in test_graph.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from engine_support import EngineBackend
from serve_support import a_stop_string_from

from l2ray.decode.types import TokenStep
from l2ray.recipe import ServeConfig
from l2ray.serve.controller import ReasoningController
from l2ray.serve.protocol import SCHEMAS, parse_request

QUESTION = [{"role": "user", "content": "What is 2+3?"}]
PROMPT = "Let me think about what 2+3 is"


class CountingBackend(EngineBackend):
    """The in-process reference backend, counting the generator calls of the segment loop."""

    calls = 0

    async def complete(self, *args: Any, **kwargs: Any) -> tuple[list[TokenStep], str]:
        self.calls += 1
        return await super().complete(*args, **kwargs)


@pytest.fixture
def http(engine, student_path) -> ReasoningController:
    """The controller with generator_url, its HTTP backend replaced by the in-process one."""
    settings = {"model": str(student_path), "generator_url": "http://127.0.0.1:9/v1"}
    controller = ReasoningController(None, ServeConfig(**settings))
    controller.backend = CountingBackend(engine)
    return controller


def respond(controller: ReasoningController, kind: str, **fields: Any) -> dict[str, Any]:
    payload = {"model": "l2ray", "temperature": 0.0, **fields}  # greedy unless a test asks otherwise
    status, body = asyncio.run(controller.respond(parse_request(SCHEMAS[kind], payload)))
    assert status == 200, body
    return body


def stream(controller: ReasoningController, kind: str, **fields: Any) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        payload = {"model": "l2ray", "stream": True, "temperature": 0.0, **fields}
        return [chunk async for chunk in controller.stream(parse_request(SCHEMAS[kind], payload))]

    head, *chunks = asyncio.run(collect())
    assert head == {"status": 200}
    return chunks


def streamed_text(chunks: list[dict[str, Any]], field: str = "text") -> str:
    if field == "text":
        return "".join(c["choices"][0]["text"] for c in chunks)
    return "".join(c["choices"][0]["delta"].get(field) or "" for c in chunks if "choices" in c)


@pytest.mark.parametrize("path", ["fast", "http"])
def test_a_stop_string_ends_a_completion_before_it(request, path):
    controller = request.getfixturevalue(path)
    whole = respond(controller, "completion", prompt=PROMPT, max_tokens=24)
    text = whole["choices"][0]["text"]
    stop, expected = a_stop_string_from(text)

    cut = respond(controller, "completion", prompt=PROMPT, max_tokens=24, stop=[stop, "never-there"])
    assert cut["choices"][0]["text"] == expected
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert cut["usage"]["completion_tokens"] < whole["usage"]["completion_tokens"]

    chunks = stream(controller, "completion", prompt=PROMPT, max_tokens=24, stop=stop)
    assert streamed_text(chunks) == expected  # never a piece of the stop string
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == cut["usage"]["completion_tokens"]


def test_the_generator_stops_decoding_when_a_stop_string_ends_the_answer(fast):
    text = respond(fast, "completion", prompt=PROMPT, max_tokens=40)["choices"][0]["text"]
    stop, _ = a_stop_string_from(text[: len(text) // 2])
    respond(fast, "completion", prompt=PROMPT, max_tokens=40, stop=stop)
    call = fast.model.calls[-1]
    assert call.cancelled and call.request.cancelled
    assert call.steps < 40  # the row was dropped, not decoded to max_tokens


def test_stop_strings_apply_to_the_answer_not_the_thinking(fast):
    knobs = {"force": "zh", "max_thinking_tokens": 6}
    whole = respond(fast, "chat", messages=QUESTION, max_tokens=30, l2ray=knobs)
    message = whole["choices"][0]["message"]
    assert message["reasoning_content"].startswith("<|lang:zh|>")

    # the tag is in the thinking only: nothing is cut
    same = respond(fast, "chat", messages=QUESTION, max_tokens=30, l2ray=knobs, stop="<|lang:zh|>")
    assert same["choices"][0] == whole["choices"][0]

    stop, expected = a_stop_string_from(message["content"])
    cut = respond(fast, "chat", messages=QUESTION, max_tokens=30, l2ray=knobs, stop=stop)
    assert cut["choices"][0]["message"] == {**message, "content": expected}
    assert cut["choices"][0]["finish_reason"] == "stop"
    usage = cut["usage"]
    assert usage["thinking_tokens"] == whole["usage"]["thinking_tokens"]
    assert usage["completion_tokens"] == usage["thinking_tokens"] + usage["answer_tokens"]  # </think>: answer

    chunks = stream(fast, "chat", messages=QUESTION, max_tokens=30, l2ray=knobs, stop=stop)
    assert streamed_text(chunks, "content") == expected
    assert streamed_text(chunks, "reasoning_content") == message["reasoning_content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("path", ["fast", "http"])
def test_without_a_seed_every_request_samples_afresh(request, path):
    controller = request.getfixturevalue(path)

    def sample(**seed: int) -> list[str]:
        body = respond(controller, "completion", prompt=PROMPT, max_tokens=12, temperature=1.0, n=2, **seed)
        return [c["text"] for c in body["choices"]]

    unseeded = [sample(), sample()]
    assert unseeded[0] != unseeded[1]
    seeded = sample(seed=7)
    assert seeded == sample(seed=7)  # an explicit seed is reproducible...
    assert seeded[0] != seeded[1]  # ...and each choice gets its own (seed + index)


def test_the_http_path_passes_temperature_and_logit_bias_on(http, fast, engine):
    greedy = respond(http, "completion", prompt=PROMPT, max_tokens=12)
    assert greedy["choices"][0] == respond(fast, "completion", prompt=PROMPT, max_tokens=12)["choices"][0]
    sampled = respond(http, "completion", prompt=PROMPT, max_tokens=12, temperature=1.0, seed=3)
    assert sampled["choices"][0]["text"] != greedy["choices"][0]["text"]

    favourite = engine.codec.encode(" five")[0]
    biased = respond(http, "completion", prompt=PROMPT, max_tokens=6, logit_bias={str(favourite): 100})
    assert biased["choices"][0]["text"] == engine.tokenizer.decode([favourite] * 6)


def test_the_http_path_streams_each_segment_as_it_arrives(http):
    backend = http.backend
    seen_at: list[int] = []

    async def consume() -> None:
        payload = {
            "model": "l2ray",
            "messages": QUESTION,
            "max_tokens": 40,
            "stream": True,
            "l2ray": {"force": "zh", "max_thinking_tokens": 12, "num_ignore": 1},
        }
        async for chunk in http.stream(parse_request(SCHEMAS["chat"], payload)):
            if chunk.get("choices"):
                seen_at.append(backend.calls)

    asyncio.run(consume())
    assert seen_at[0] < seen_at[-1]  # the first text came before the loop's last call


def test_the_http_path_refuses_what_it_cannot_return(http):
    for field, value in (("logprobs", 0), ("ignore_eos", True)):
        payload = {"model": "l2ray", "prompt": PROMPT, field: value}
        status, body = asyncio.run(http.respond(parse_request(SCHEMAS["completion"], payload)))
        assert status == 400
        assert body["error"]["param"] == field and "generator_url" in body["error"]["message"]
