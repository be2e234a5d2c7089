"""What a client and an operator are told, checked on the controller with an in-process engine: the
model's own sampling defaults, ``n > 1`` streamed by index, ``l2ray`` options a raw prompt cannot
honour refused, unfinished thinking reported as ``length``, usage that adds up and names what it
measures, and 503s with ``Retry-After`` while no replica is ready."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from serve_support import InProcessGenerator
from test_controller import PROMPT, QUESTION, respond, stream

from l2ray.decode.detok import ThinkingSplitter
from l2ray.recipe import ServeConfig
from l2ray.serve.choices import ChoiceText
from l2ray.serve.controller import ReasoningController
from l2ray.serve.protocol import RETRY_AFTER_S, SCHEMAS, parse_request
from l2ray.serve.responses import usage_body


@pytest.fixture
def controller(fast) -> ReasoningController:
    return fast  # the controller over the stand-in model link (tests/serve/test_controller.py)


def ask(controller: ReasoningController, kind: str, **fields: Any) -> tuple[int, dict[str, Any]]:
    return asyncio.run(controller.respond(parse_request(SCHEMAS[kind], {"model": "l2ray", **fields})))


def test_sampling_left_out_takes_the_models_defaults_then_openais(controller, engine):
    generator = controller.model
    assert engine.codec.sampling == {"temperature": 1.0, "top_p": 1.0}  # its generation config sets none
    ask(controller, "chat", messages=QUESTION, max_tokens=4)
    assert (generator.calls[-1].request.temperature, generator.calls[-1].request.top_p) == (1.0, 1.0)
    engine.codec.sampling = {"temperature": 0.6, "top_p": 0.9}  # what a model's generation config may set
    try:
        ask(controller, "chat", messages=QUESTION, max_tokens=4)
        assert (generator.calls[-1].request.temperature, generator.calls[-1].request.top_p) == (0.6, 0.9)
        ask(controller, "chat", messages=QUESTION, max_tokens=4, temperature=0.0)
        assert generator.calls[-1].request.temperature == 0.0  # what the request says wins
    finally:
        engine.codec.sampling = {"temperature": 1.0, "top_p": 1.0}


def test_n_choices_stream_by_index_and_end_with_one_usage(controller):
    chunks = stream(
        controller,
        "chat",
        messages=QUESTION,
        max_tokens=10,
        n=2,
        temperature=1.0,
        seed=4,
        stream_options={"include_usage": True},
    )
    *deltas, last = chunks
    indexes = {c["choices"][0]["index"] for c in deltas}
    assert indexes == {0, 1} and last["choices"] == []
    finished = [c["choices"][0]["index"] for c in deltas if c["choices"][0].get("finish_reason")]
    assert sorted(finished) == [0, 1]
    whole = respond(controller, "chat", messages=QUESTION, max_tokens=10, n=2, temperature=1.0, seed=4)
    assert last["usage"] == whole["usage"] and last["usage"]["completion_tokens"] == 20


def test_l2ray_options_on_a_raw_prompt_that_opens_no_thinking_are_refused(controller):
    status, body = ask(controller, "completion", prompt="What is 2+3?", max_tokens=8, l2ray={"force": "zh"})
    assert status == 400 and body["error"]["param"] == "l2ray"
    assert "does not end inside <think>" in body["error"]["message"]
    thinking_prompt = respond(
        controller, "completion", prompt=PROMPT + " <think>", max_tokens=8, l2ray={"force": "zh"}
    )
    assert thinking_prompt["choices"][0]["text"].startswith("<|lang:zh|>")


def test_thinking_that_never_closed_is_reported_as_length(controller, engine):
    eos = engine.codec.vocab.stop_ids[0]  # the model stops at once, still inside its thinking
    body = respond(controller, "chat", messages=QUESTION, max_tokens=8, logit_bias={str(eos): 100})
    choice = body["choices"][0]
    assert choice["message"]["content"] == "" and choice["finish_reason"] == "length"


def test_usage_adds_up_and_names_what_it_measures(controller):
    body = respond(
        controller, "chat", messages=QUESTION, max_tokens=30, l2ray={"force": "fr", "max_thinking_tokens": 6}
    )
    usage = body["usage"]
    assert usage["completion_tokens"] == usage["thinking_tokens"] + usage["answer_tokens"]
    assert usage["tag_mix"] == {"fr": 1.0}  # what the tags say
    # ``language_mix`` is the text's: measured on the thinking, whatever its tags claim.
    choice = ChoiceText(
        0, None, ThinkingSplitter(True), reasoning="这是一个很长的中文句子，我们在思考这个问题。"
    )
    choice.counters = {"language_tokens": {"en": 9}}
    mixed = usage_body(3, [choice])
    assert mixed["tag_mix"] == {"en": 1.0} and mixed["language_mix"] == {"zh": 1.0}


class SlowToLoad(InProcessGenerator):
    """A Generator whose replica is still loading: ``ready`` never answers in time."""

    async def ready(self) -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {}


def test_no_ready_replica_means_503_with_retry_after_at_once(engine):
    controller = ReasoningController(SlowToLoad(engine), ServeConfig())
    status, body = ask(controller, "chat", messages=QUESTION, max_tokens=4)
    assert status == 503 and body["error"]["type"] == "server_error"
    assert (
        f"retry in {RETRY_AFTER_S} s" in body["error"]["message"] and "Error" not in body["error"]["message"]
    )
    assert asyncio.run(controller.readiness())[0] == 503
    ready = ReasoningController(InProcessGenerator(engine), ServeConfig())
    ready._codec = engine.codec
    assert asyncio.run(ready.readiness()) == (200, {"status": "ready", "model": "in-process"})
