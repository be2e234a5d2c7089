"""The request schemas: what the official client sends parses, `stop` and `seed` mean what OpenAI
says, and fields the server cannot honour are refused with a 400 naming them instead of ignored."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from l2ray.serve.protocol import ChatRequest, CompletionRequest, RequestError, parse_request

MESSAGES = [{"role": "user", "content": "What is 7 * 8?"}]


def chat(**fields) -> dict:
    return {"model": "l2ray", "messages": MESSAGES, **fields}


def refusal(schema: type, body: dict) -> dict:
    with pytest.raises(RequestError) as caught:
        parse_request(schema, body)
    assert caught.value.status == 400
    return caught.value.body()["error"]


def bodies_sent_by_the_official_client() -> list[tuple[str, dict]]:
    """The JSON bodies openai's client sends for typical calls (captured, never sent anywhere)."""
    sent: list[tuple[str, dict]] = []

    def capture(request: httpx.Request) -> httpx.Response:
        sent.append((request.url.path, json.loads(request.content)))
        return httpx.Response(400, json={"error": {"message": "captured", "type": "invalid_request_error"}})

    client = openai.OpenAI(
        base_url="http://l2ray.invalid/v1",
        api_key="sk-test",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(capture)),
    )
    calls = [
        lambda: client.chat.completions.create(model="l2ray", messages=MESSAGES),
        lambda: client.chat.completions.create(
            model="l2ray",
            messages=MESSAGES,
            temperature=0.7,
            top_p=0.9,
            max_tokens=64,
            n=2,
            seed=1,
            stop=["\n\n"],
            user="someone",
            presence_penalty=0,
            frequency_penalty=0,
            logprobs=False,
            response_format={"type": "text"},
            extra_body={"l2ray": {"force": "zh"}},
        ),
        lambda: client.chat.completions.create(
            model="l2ray", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        ),
        lambda: client.completions.create(model="l2ray", prompt="What is", stop="\n", logprobs=2, echo=False),
    ]
    for call in calls:
        with pytest.raises(openai.BadRequestError):
            call()
    return sent


def test_what_the_official_client_sends_is_accepted():
    sent = bodies_sent_by_the_official_client()
    assert len(sent) == 4
    for path, body in sent:
        schema = ChatRequest if path.endswith("/chat/completions") else CompletionRequest
        parse_request(schema, body)  # no RequestError
    assert parse_request(ChatRequest, sent[1][1]).stop == ["\n\n"]
    assert parse_request(CompletionRequest, sent[3][1]).stop == ["\n"]


def test_unknown_harmless_fields_are_ignored():
    body = chat(user="u-1", metadata={"k": "v"}, store=False, service_tier="auto", parallel_tool_calls=True)
    assert parse_request(ChatRequest, body).model == "l2ray"


def test_stop_takes_one_string_or_up_to_four():
    assert parse_request(ChatRequest, chat(stop="###")).stop == ["###"]
    assert parse_request(ChatRequest, chat(stop=["a", "b"])).stop == ["a", "b"]
    assert parse_request(ChatRequest, chat(stop=[])).stop is None
    assert parse_request(ChatRequest, chat()).stop is None
    too_many = refusal(ChatRequest, chat(stop=["a", "b", "c", "d", "e"]))
    assert too_many["param"] == "stop" and "at most 4" in too_many["message"]
    empty = refusal(CompletionRequest, {"model": "l2ray", "prompt": "x", "stop": [""]})
    assert empty["param"] == "stop" and empty["message"].startswith("stop:")


def test_seed_is_optional_and_kept_when_given():
    assert parse_request(ChatRequest, chat()).seed is None
    assert parse_request(ChatRequest, chat(seed=42)).seed == 42
    assert refusal(ChatRequest, chat(seed=-1))["param"] == "seed"


@pytest.mark.parametrize(
    "schema, field, value",
    [
        (ChatRequest, "presence_penalty", 0.5),
        (ChatRequest, "frequency_penalty", -1.0),
        (CompletionRequest, "presence_penalty", 1.0),
        (CompletionRequest, "frequency_penalty", 2.0),
        (ChatRequest, "logprobs", True),
        (ChatRequest, "top_logprobs", 3),
        (ChatRequest, "tools", [{"type": "function", "function": {"name": "f"}}]),
        (ChatRequest, "functions", [{"name": "f"}]),
        (ChatRequest, "response_format", {"type": "json_object"}),
        (CompletionRequest, "echo", True),
        (CompletionRequest, "best_of", 3),
        (CompletionRequest, "suffix", "tail"),
    ],
)
def test_fields_that_would_change_the_output_are_refused_by_name(schema, field, value):
    base = chat() if schema is ChatRequest else {"model": "l2ray", "prompt": "What is"}
    error = refusal(schema, {**base, field: value})
    assert error["param"] == field
    assert error["code"] == "unsupported_parameter"
    assert error["message"].startswith(f"{field}: not supported by this server; ")
    assert "omit it" in error["message"]


@pytest.mark.parametrize(
    "field, value",
    [
        ("presence_penalty", 0),
        ("frequency_penalty", 0.0),
        ("presence_penalty", None),
        ("logprobs", False),
        ("top_logprobs", 0),
        ("tools", []),
        ("response_format", {"type": "text"}),
    ],
)
def test_their_neutral_values_are_accepted(field, value):
    parse_request(ChatRequest, chat(**{field: value}))


def test_out_of_range_penalty_is_a_range_error():
    error = refusal(ChatRequest, chat(presence_penalty=5))
    assert error["param"] == "presence_penalty" and "2" in error["message"]


def test_text_content_parts_are_joined_and_other_parts_refused():
    parts = [{"type": "text", "text": "What is "}, {"type": "text", "text": "7*8?"}]
    request = parse_request(ChatRequest, {"model": "l2ray", "messages": [{"role": "user", "content": parts}]})
    assert request.messages[0].content == "What is 7*8?"
    image = [{"type": "image_url", "image_url": {"url": "http://x"}}]
    with pytest.raises(RequestError, match="content parts must be") as caught:
        parse_request(ChatRequest, {"model": "l2ray", "messages": [{"role": "user", "content": image}]})
    assert caught.value.status == 400


@pytest.mark.parametrize(
    "field",
    [
        {"stream": "true"},
        {"n": "2"},
        {"seed": 1.5},
        {"max_tokens": "16"},
        {"stream_options": {"include_usage": "yes"}},
        {"l2ray": {"show_thinking": "false"}},
        {"l2ray": {"top_k": "3"}},
        {"l2ray": {"alpha_mode": "sign", "alpha": "-0.5"}},
    ],
)
def test_strings_are_not_coerced_to_booleans_or_numbers(field):
    body = {"model": "l2ray", "messages": [{"role": "user", "content": "1+1?"}], **field}
    with pytest.raises(RequestError) as caught:
        parse_request(ChatRequest, body)
    assert caught.value.status == 400


def test_loose_but_valid_json_still_parses():
    body = {
        "model": "l2ray",
        "messages": [{"role": "user", "content": "1+1?"}],
        "temperature": 1,  # an integer is a number
        "logit_bias": {"5": 2},  # JSON object keys are strings
        "l2ray": {"boost": ["zh"], "beta": 3, "alpha": -0.5, "alpha_mode": "sign"},
    }
    request = parse_request(ChatRequest, body)
    assert request.logit_bias == {5: 2.0} and request.temperature == 1.0
    assert request.l2ray.intervention().alpha_mode == "sign"
