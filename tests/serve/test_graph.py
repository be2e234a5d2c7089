"""The graph end to end on a local Ray cluster: official openai client (plain and streaming),
interventions on a briefly trained student, budgets under concurrency, the HTTP segment loop,
the MLflow alias, API keys, limits, and at least 15 bad requests answered 4xx with the server up."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import openai
import pytest
from engine_support import LocalGenerator, run_segment_loop
from serve_support import API_KEY, MODEL_NAME, a_stop_string_from, first_tag

from l2ray.decode.types import DecodeRequest
from l2ray.languages import tag_token
from l2ray.recipe import InterventionConfig, ServeConfig
from l2ray.serve.backends import OpenAICompletionsBackend
from l2ray.serve.protocol import ChatRequest, parse_request
from l2ray.text import tag_languages

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is 12+30?"}]


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server, api_key=API_KEY, max_retries=0)


@pytest.fixture(scope="module")
def local(trained_student) -> LocalGenerator:
    return LocalGenerator(str(trained_student), device="cpu")


def chat(client, n=1, **l2ray):
    return client.chat.completions.create(
        model="l2ray",
        messages=QUESTION,
        max_tokens=48,
        temperature=1.0,
        n=n,
        seed=0,
        extra_body={"l2ray": l2ray},
    )


def test_plain_and_streaming_agree_and_report_usage(client, local):
    knobs = {"max_thinking_tokens": 20}
    plain = client.chat.completions.create(
        model="l2ray", temperature=0, messages=QUESTION, max_tokens=40, extra_body={"l2ray": knobs}
    )
    usage = plain.usage.model_dump()
    for key in (
        "prompt_tokens",
        "completion_tokens",
        "thinking_tokens",
        "answer_tokens",
        "language_mix",
        "tag_mix",
        "switches",
    ):
        assert key in usage
    message = plain.choices[0].message.model_dump()
    assert message["reasoning_content"]
    assert usage["thinking_tokens"] <= 20
    assert usage["completion_tokens"] == usage["thinking_tokens"] + usage["answer_tokens"]  # </think>: answer

    reasoning, content, last = "", "", None
    stream = client.chat.completions.create(
        model="l2ray",
        temperature=0,
        messages=QUESTION,
        max_tokens=40,
        stream=True,
        extra_body={"l2ray": knobs},
    )
    for chunk in stream:
        delta = chunk.choices[0].delta.model_dump()
        reasoning += delta.get("reasoning_content") or ""
        content += delta.get("content") or ""
        last = chunk
    assert (reasoning, content) == (message["reasoning_content"], message["content"])
    assert last.choices[0].finish_reason == plain.choices[0].finish_reason
    assert last.model_dump()["usage"]["thinking_tokens"] == usage["thinking_tokens"]

    # the served model is the registered version: the same greedy output as the local folder
    [expected] = local.generate([QUESTION], InterventionConfig(**knobs), max_tokens=40)
    assert expected.text.split("</think>")[0] == message["reasoning_content"]
    assert expected.thinking_tokens == usage["thinking_tokens"]

    hidden = client.chat.completions.create(
        model="l2ray",
        temperature=0,
        messages=QUESTION,
        max_tokens=40,
        extra_body={"l2ray": {**knobs, "show_thinking": False}},
    )
    assert "reasoning_content" not in hidden.choices[0].message.model_dump(exclude_none=True)
    assert hidden.choices[0].message.content == message["content"]


def test_stop_strings_end_the_answer_plain_and_streamed(client):
    """The graph stops at a stop string (the Generator is told to stop) and never sends one."""
    knobs = {"extra_body": {"l2ray": {"max_thinking_tokens": 8}}}
    whole = client.chat.completions.create(
        model="l2ray", temperature=0, messages=QUESTION, max_tokens=40, **knobs
    )
    stop, expected = a_stop_string_from(whole.choices[0].message.content)

    cut = client.chat.completions.create(
        model="l2ray", temperature=0, messages=QUESTION, max_tokens=40, stop=stop, **knobs
    )
    assert cut.choices[0].message.content == expected
    assert cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < whole.usage.completion_tokens

    stream = client.chat.completions.create(
        model="l2ray", temperature=0, messages=QUESTION, max_tokens=40, stop=[stop], stream=True, **knobs
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_force_yields_only_the_forced_tag(client):
    response = chat(client, n=6, force="de")
    for choice in response.choices:
        thinking = choice.message.model_dump()["reasoning_content"]
        assert thinking.startswith(tag_token("de"))
        assert set(tag_languages(thinking)) == {"de"}
    assert response.usage.model_dump()["tag_mix"] == {"de": 1.0}


def test_intervention_changes_the_tag_distribution(client):
    """Baseline vs boost/suppress over the same 24 seeds (temperature 1): the share of traces that
    open in German rises from about a quarter (the training mix) to most of them."""

    def german_share(**l2ray) -> float:
        firsts = []
        for seed in (0, 8, 16):
            response = client.chat.completions.create(
                model="l2ray",
                messages=QUESTION,
                max_tokens=6,
                temperature=1.0,
                n=8,
                seed=seed,
                extra_body={"l2ray": l2ray},
            )
            firsts += [
                first_tag(c.message.model_dump().get("reasoning_content") or "") for c in response.choices
            ]
        return firsts.count("de") / len(firsts)

    baseline = german_share()
    boosted = german_share(boost=["de"], suppress=["en", "zh", "fr"], beta=6.0)
    assert baseline < 0.6
    assert boosted > 0.8
    assert boosted - baseline > 0.3


def test_thinking_budget_holds_under_eight_concurrent_requests(server):
    budgets = [2, 3, 4, 5, 6, 7, 8, 9]

    async def one(aclient, budget):
        return await aclient.chat.completions.create(
            model="l2ray",
            temperature=0,
            messages=QUESTION,
            max_tokens=24,
            extra_body={"l2ray": {"max_thinking_tokens": budget}},
        )

    async def all_at_once():
        aclient = openai.AsyncOpenAI(base_url=server, api_key=API_KEY, max_retries=0)
        try:
            return await asyncio.gather(*(one(aclient, b) for b in budgets))
        finally:
            await aclient.close()

    # How the eight are split into batches depends on when they arrive, so only the budget is checked
    # here; that batching changes no row's tokens is tested with fixed batches (tests/decode).
    responses = asyncio.run(all_at_once())
    for budget, response in zip(budgets, responses, strict=True):
        usage = response.usage.model_dump()
        assert 0 < usage["thinking_tokens"] <= budget
        assert response.choices[0].message.model_dump()["reasoning_content"]


@pytest.mark.parametrize(
    "knobs",
    [
        {"boost": ["fr"], "suppress": ["en"], "beta": 4.0, "alpha": 0.6},
        {"boost": ["zh", "de"], "beta": 3.0, "alpha": 0.8, "max_switches": 1, "num_ignore": 1},
    ],
)
def test_http_segment_loop_matches_the_processors(server, local, knobs):
    """The controller's segment loop over real HTTP (/v1/completions of this server, no intervention
    there) makes the same language choices as the in-replica processors for the same seed."""
    engine = local.engine
    request = DecodeRequest(engine.codec.chat_prompt(QUESTION), 40, InterventionConfig(**knobs), seed=4)
    [steps] = engine.run([request])
    fast, counters = [e.token for e in steps if not e.is_stop], steps[-1].usage

    async def loop():
        backend = OpenAICompletionsBackend(server, "l2ray", api_key=API_KEY)
        try:
            policy = engine.codec.policy(request)
            return policy, await run_segment_loop(backend, request.prompt_ids, policy, 40, chunk=8)
        finally:
            await backend.close()

    loop_policy, result = asyncio.run(loop())
    assert result.tokens == fast
    assert loop_policy.language_tokens == counters["language_tokens"] and counters["language_tokens"]
    assert loop_policy.switches == counters["switches"]


def test_api_keys(server):
    body = {"model": "l2ray", "messages": QUESTION, "max_tokens": 2}
    missing = httpx.post(f"{server}/chat/completions", json=body)
    wrong = httpx.post(
        f"{server}/chat/completions", json=body, headers={"Authorization": "Bearer sk-wrong-key-123"}
    )
    right = httpx.post(
        f"{server}/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert missing.status_code == wrong.status_code == 401
    assert missing.json()["error"]["type"] == "authentication_error"
    assert right.status_code == 200
    assert httpx.get(f"{server}/models").status_code == 401
    assert httpx.get(server.removesuffix("/v1") + "/healthz").json() == {"status": "ok"}
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server, api_key="sk-wrong-key-123", max_retries=0).models.list()


def test_keys_never_reach_the_logs(server, ray_cluster):
    refused = httpx.post(
        f"{server}/chat/completions", json={}, headers={"Authorization": "Bearer sk-wrong-key-123"}
    )
    logs = Path(ray_cluster._private.worker._global_node.get_session_dir_path()) / "logs"
    # Replicas write their logs asynchronously: scan once this request's own lines are there.
    request_id = refused.headers["x-request-id"]
    deadline = time.monotonic() + 60
    while not any(request_id.encode() in p.read_bytes() for p in (logs / "serve").glob("replica_*")):
        assert time.monotonic() < deadline, f"no replica logged request {request_id}"
        time.sleep(0.2)
    leaked = [
        str(path)
        for path in logs.rglob("*")
        if path.is_file() and any(k in path.read_bytes() for k in (API_KEY.encode(), b"sk-wrong-key-123"))
    ]
    assert not leaked


def test_per_key_concurrency_limit(server):
    async def burst():
        async with httpx.AsyncClient(timeout=120, headers={"Authorization": f"Bearer {API_KEY}"}) as http:
            body = {"model": "l2ray", "messages": QUESTION, "max_tokens": 200, "l2ray": {"num_ignore": 8}}
            return await asyncio.gather(
                *(http.post(f"{server}/chat/completions", json=body) for _ in range(14))
            )

    codes = [r.status_code for r in asyncio.run(burst())]
    assert 429 in codes and 200 in codes and set(codes) <= {200, 429}


LONG = "x " * 6000
BAD_REQUESTS = [
    ("invalid JSON", "{not json", 400, "invalid_json"),
    ("body is a list", [1, 2], 400, None),
    ("missing messages", {"model": "l2ray"}, 400, "missing"),
    ("empty messages", {"model": "l2ray", "messages": []}, 400, None),
    ("messages wrong type", {"model": "l2ray", "messages": "hi"}, 400, None),
    ("unknown role", {"model": "l2ray", "messages": [{"role": "robot", "content": "x"}]}, 400, None),
    ("unknown model", {"model": "gpt-9", "messages": QUESTION}, 404, "model_not_found"),
    ("unknown language", {"model": "l2ray", "messages": QUESTION, "l2ray": {"boost": ["xx"]}}, 400, None),
    (
        "unknown forced language",
        {"model": "l2ray", "messages": QUESTION, "l2ray": {"force": "tlh"}},
        400,
        None,
    ),
    ("unknown l2ray option", {"model": "l2ray", "messages": QUESTION, "l2ray": {"boots": ["de"]}}, 400, None),
    (
        "boost and suppress",
        {"model": "l2ray", "messages": QUESTION, "l2ray": {"boost": ["de"], "suppress": ["de"]}},
        400,
        None,
    ),
    (
        "negative budget",
        {"model": "l2ray", "messages": QUESTION, "l2ray": {"max_thinking_tokens": -5}},
        400,
        None,
    ),
    (
        "absurd budget",
        {"model": "l2ray", "messages": QUESTION, "l2ray": {"max_thinking_tokens": 10**12}},
        400,
        None,
    ),
    ("n zero", {"model": "l2ray", "messages": QUESTION, "n": 0}, 400, None),
    ("n too large", {"model": "l2ray", "messages": QUESTION, "n": 1000}, 400, None),
    ("max_tokens zero", {"model": "l2ray", "messages": QUESTION, "max_tokens": 0}, 400, None),
    ("max_tokens over the limit", {"model": "l2ray", "messages": QUESTION, "max_tokens": 10**6}, 400, None),
    ("max_tokens wrong type", {"model": "l2ray", "messages": QUESTION, "max_tokens": "many"}, 400, None),
    ("temperature wrong type", {"model": "l2ray", "messages": QUESTION, "temperature": "hot"}, 400, None),
    (
        "prompt longer than the context",
        {"model": "l2ray", "messages": [{"role": "user", "content": LONG}]},
        400,
        "context_length_exceeded",
    ),
    (
        "prompt + max_tokens over the context",
        {"model": "l2ray", "messages": [{"role": "user", "content": "x " * 3000}], "max_tokens": 2000},
        400,
        "context_length_exceeded",
    ),
    (
        "logit_bias out of vocabulary",
        {"model": "l2ray", "messages": QUESTION, "logit_bias": {"99999999": 5}},
        400,
        None,
    ),
    (
        "body too large",
        {"model": "l2ray", "messages": [{"role": "user", "content": "y" * 100_000}]},
        413,
        None,
    ),
]


@pytest.mark.parametrize("name, body, status, code", BAD_REQUESTS, ids=[case[0] for case in BAD_REQUESTS])
def test_bad_requests_get_openai_errors(server, name, body, status, code):
    content = body if isinstance(body, str) else json.dumps(body)
    response = httpx.post(
        f"{server}/chat/completions",
        content=content,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"]
    if code:
        assert error["code"] == code


def test_raw_completions_and_bad_completions(server):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    ok = httpx.post(
        f"{server}/completions",
        json={"model": "l2ray", "prompt": "What is", "max_tokens": 4, "logprobs": 3},
        headers=headers,
    )
    assert ok.status_code == 200
    choice = ok.json()["choices"][0]
    assert len(choice["logprobs"]["top_logprobs"]) == ok.json()["usage"]["completion_tokens"]
    bad_ids = httpx.post(f"{server}/completions", json={"model": "l2ray", "prompt": [10**9]}, headers=headers)
    too_many = httpx.post(
        f"{server}/completions", json={"model": "l2ray", "prompt": "a", "logprobs": 50}, headers=headers
    )
    assert bad_ids.status_code == too_many.status_code == 400
    assert httpx.get(f"{server}/chat/completions", headers=headers).status_code == 405
    assert httpx.get(f"{server}/nope", headers=headers).json()["error"]["type"] == "not_found_error"
    # still serving after every refusal
    assert httpx.get(server.removesuffix("/v1") + "/healthz").status_code == 200


def test_controller_with_an_http_only_generator_answers_like_the_graph(
    server, client, trained_student, monkeypatch
):
    """The ReasoningController composed with ``generator_url`` (segment loop) gives the same
    response as the graph's in-replica fast path (greedy, same seed)."""
    from l2ray.serve.controller import ReasoningController

    knobs = {"boost": ["de"], "suppress": ["en"], "beta": 3.0, "alpha": 0.7, "max_thinking_tokens": 24}
    monkeypatch.setenv("L2RAY_TEST_GENERATOR_KEY", API_KEY)
    settings = {
        "model": str(trained_student),
        "generator_url": server,
        "generator_api_key_env": "L2RAY_TEST_GENERATOR_KEY",
    }
    controller = ReasoningController(None, ServeConfig(**settings))
    payload = {
        "model": "l2ray",
        "messages": QUESTION,
        "max_tokens": 32,
        "seed": 2,
        "temperature": 0,
        "l2ray": knobs,
    }
    status, body = asyncio.run(controller.respond(parse_request(ChatRequest, payload)))
    assert status == 200
    fast = client.chat.completions.create(
        model="l2ray", temperature=0, messages=QUESTION, max_tokens=32, seed=2, extra_body={"l2ray": knobs}
    ).model_dump()
    assert body["choices"][0]["message"] == {
        k: v for k, v in fast["choices"][0]["message"].items() if k in body["choices"][0]["message"]
    }
    for key in (
        "thinking_tokens",
        "answer_tokens",
        "switches",
        "language_mix",
        "tag_mix",
        "completion_tokens",
    ):
        assert body["usage"][key] == fast["usage"][key]


def test_replicas_serve_the_version_pinned_at_deploy_after_the_alias_moves(server, registry, ray_cluster):
    """``models:/NAME@champion`` is resolved once when the app is built: ``/v1/models`` says which
    version, and a replica that restarts after the alias moved loads that version, not the new one."""
    from ray import serve

    from l2ray.mlflow_store import mlflow_client

    tracking_uri, model_uri = registry
    headers = {"Authorization": f"Bearer {API_KEY}"}
    client = mlflow_client(tracking_uri)
    first = client.get_model_version_by_alias(MODEL_NAME, "champion")
    pinned = f"models:/{MODEL_NAME}/{first.version}"
    card = httpx.get(f"{server}/models", headers=headers).json()["data"][0]
    assert card["l2ray"] == {
        "model": model_uri,
        "uri": pinned,
        "name": MODEL_NAME,
        "version": str(first.version),
        "run_id": first.run_id,
    }

    files = client.get_model_version_download_uri(MODEL_NAME, first.version)
    moved = client.create_model_version(MODEL_NAME, files, run_id=first.run_id)
    client.set_registered_model_alias(MODEL_NAME, "champion", moved.version)
    try:
        generator = serve.get_deployment_handle("Generator", app_name="l2ray")
        [replica] = [
            name
            for name in ray_cluster.util.list_named_actors(all_namespaces=True)
            if name["name"].startswith("SERVE_REPLICA::l2ray#Generator#")
        ]
        ray_cluster.kill(ray_cluster.get_actor(replica["name"], namespace=replica["namespace"]))
        deadline = time.monotonic() + 120
        while True:  # Serve starts a replacement; calls fail until it is up
            try:
                info = generator.info.remote().result(timeout_s=30)
                break
            except Exception:
                assert time.monotonic() < deadline, "no Generator replica came back"
                time.sleep(1)
        assert info.model == pinned
        assert httpx.get(f"{server}/models", headers=headers).json()["data"][0]["l2ray"]["uri"] == pinned
        assert chat(client=openai.OpenAI(base_url=server, api_key=API_KEY, max_retries=2)).choices
    finally:
        client.set_registered_model_alias(MODEL_NAME, "champion", first.version)


def test_the_direct_graph_answers_as_the_split_one_from_one_deployment(server, registry):
    """``graph: direct`` (the Generator inside the Ingress replica: no Ray hop per token) answers what
    the split graph answers — the same greedy thinking and answer under a forced language and a
    budget, streamed or not — from an application of one deployment, ready once it has decoded."""
    from ray import serve

    from l2ray.serve.app import build_app

    tracking_uri, model_uri = registry
    args = {"model": model_uri, "tracking_uri": tracking_uri, "device": "cpu", "num_cpus": 0.25}
    serve.run(
        build_app({**args, "api_keys_env": None, "graph": "direct"}), name="direct", route_prefix="/direct"
    )
    try:
        base = server.removesuffix("/v1") + "/direct"
        assert set(serve.status().applications["direct"].deployments) == {"Ingress"}
        assert httpx.get(f"{base}/readyz", timeout=60).json()["status"] == "ready"
        direct = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        split = openai.OpenAI(base_url=server, api_key=API_KEY, max_retries=0)
        ask = {"model": "l2ray", "temperature": 0, "messages": QUESTION, "max_tokens": 32}
        knobs = {"extra_body": {"l2ray": {"force": "zh", "max_thinking_tokens": 12}}}
        want, got = (c.chat.completions.create(**ask, **knobs) for c in (split, direct))
        assert got.choices[0].message.model_dump() == want.choices[0].message.model_dump()
        assert got.usage.model_dump() == want.usage.model_dump()
        assert got.usage.model_dump()["thinking_tokens"] <= 12
        assert first_tag(got.choices[0].message.model_dump()["reasoning_content"]) == "zh"
        streamed = "".join(
            chunk.choices[0].delta.model_dump().get("reasoning_content") or ""
            for chunk in direct.chat.completions.create(**ask, **knobs, stream=True)
            if chunk.choices
        )
        assert streamed == want.choices[0].message.model_dump()["reasoning_content"]
    finally:
        serve.delete("direct")
