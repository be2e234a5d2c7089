"""Engines without Ray: what the endpoint is asked for (``GET /models``), and thinking that never closed
graded the same in-process and over HTTP. Real HTTP servers on 127.0.0.1, the offline student in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from evalkit import completion, make_recipe
from fake_teacher import FAULTS, FakeTeacher

from l2ray.decode.types import Completion
from l2ray.eval.api import run_eval
from l2ray.eval.engines import (
    EndpointError,
    HttpEngine,
    LocalEngine,
    SampleRequest,
    served_model_id,
)
from l2ray.eval.metrics import score_sample
from l2ray.eval.pool import served_model_for
from l2ray.recipe import HttpClientSettings, InterventionConfig
from l2ray.student.model_ref import resolve_model

ROW = {
    "benchmark": "b",
    "problem_id": "p",
    "sample": 0,
    "configuration": "off",
    "question": "What is 17 × 23?",
    "gold": "391",
    "answer_type": "integer",
}
CUT_REASONING = r"<|lang:en|>17 × 23 = 391, so the answer is \boxed{391}"


def _request(
    seed: int, max_tokens: int = 64, intervention: InterventionConfig | None = None
) -> SampleRequest:
    return SampleRequest(
        str(seed),
        [{"role": "user", "content": ROW["question"]}],
        intervention or InterventionConfig(),
        max_tokens,
        0.0,
        seed,
    )


def _words(text: str) -> list[str]:
    return text.split()


def _unused(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 500, {"error": {"message": "this test sends no chat requests"}}


def test_http_reasoning_that_never_closed_is_no_answer(chat_server) -> None:
    # A server that splits the reasoning out (l2ray serve, vLLM's reasoning parsers): by seed, a reply
    # cut off while thinking, one that stopped while thinking, and one that closed and answered.
    replies = {
        0: completion("", "length", reasoning=CUT_REASONING),
        1: completion("", "stop", reasoning=CUT_REASONING),
        2: completion(r"So \boxed{391}.", "stop", reasoning="<|lang:en|>17 × 23 = 391"),
    }
    server = chat_server(lambda body: (200, replies[body["seed"]]))
    engine = HttpEngine(server.base_url, "fake", l2ray_body=False)
    generations = engine.generate([_request(seed) for seed in replies])
    records = [score_sample(ROW, g, _words) for g in generations]

    for record in records[:2]:
        # The box inside the unclosed thinking earns nothing, and the text says the thinking is open.
        assert (record["extracted"], record["correct"]) == (None, False)
        assert record["grade_reason"] == "thinking never closed"
        assert not record["closed_thinking"] and "</think>" not in record["response"]
    assert [r["truncated"] for r in records] == [True, False, False]
    answered = records[2]
    assert (answered["extracted"], answered["correct"], answered["closed_thinking"]) == ("391", True, True)
    assert records[2]["thinking_tokens"] == len(_words("<|lang:en|>17 × 23 = 391"))


def test_in_process_generations_start_inside_thinking(student_path: Path) -> None:
    # The generation prompt ends with <think>; 64 ignored attempts to end it keep 6 tokens inside it.
    engine = LocalEngine(str(student_path), device="cpu")
    [generation] = engine.generate(
        [_request(0, max_tokens=6, intervention=InterventionConfig(num_ignore=64))]
    )
    assert generation.starts_in_thinking and generation.finish_reason == "length"
    assert "</think>" not in (generation.text or "")
    record = score_sample(ROW, generation, _words)
    assert (record["extracted"], record["correct"]) == (None, False)
    assert record["grade_reason"] == "thinking never closed"
    # The same words from the local engine and from a server that split them out grade alike.
    local = score_sample(ROW, Completion(CUT_REASONING, "length", starts_in_thinking=True), _words)
    assert (local["extracted"], local["correct"]) == (None, False)
    assert local["grade_reason"] == "thinking never closed"


def test_the_model_asked_for_is_the_one_the_endpoint_lists(chat_server) -> None:
    # l2ray serve lists only its served_model_name and refuses a pinned registry URI.
    ours = chat_server(_unused, models=("l2ray",))
    assert served_model_id(ours.base_url, prefer="models:/demo/3") == "l2ray"
    # A server with several models, the evaluated one among them.
    several = chat_server(_unused, models=("models:/demo/2", "models:/demo/3"))
    assert served_model_id(several.base_url, prefer="models:/demo/3") == "models:/demo/3"


def test_an_endpoint_that_does_not_say_which_model_is_a_clear_error(chat_server) -> None:
    ambiguous = chat_server(_unused, models=("base", "chat"))
    with pytest.raises(EndpointError, match=r"lists 2 models \('base', 'chat'\).*set eval.served_model"):
        served_model_id(ambiguous.base_url, prefer="models:/demo/3")
    with pytest.raises(EndpointError, match=r"lists 0 models \(none\)"):
        served_model_id(chat_server(_unused, models=()).base_url)
    with pytest.raises(
        EndpointError, match=r"/v1/models answered HTTP 404, not a model list.*eval.served_model"
    ):
        served_model_id(chat_server(_unused, models=None).base_url)
    locked = chat_server(_unused, models=("l2ray",), api_key="sk-right")
    with pytest.raises(EndpointError, match=r"HTTP 401, not a model list \(check eval.api_key_env\)"):
        served_model_id(locked.base_url, api_key="sk-wrong")
    assert served_model_id(locked.base_url, api_key="sk-right") == "l2ray"


def test_eval_refuses_an_ambiguous_endpoint_before_generating(
    chat_server, student_path, tmp_path: Path
) -> None:
    server = chat_server(_unused, models=("base", "chat"))
    recipe = make_recipe(tmp_path, student_path, limit=1, endpoint=server.base_url)
    with pytest.raises(EndpointError, match=r"set eval\.served_model"):
        run_eval(recipe)
    assert server.requests == [] and not (recipe.run_dir / "eval").exists()
    # A configured name is sent as it is, without asking the endpoint.
    named = make_recipe(tmp_path, student_path, endpoint=server.base_url, served_model="my-deployment")
    ref = resolve_model(str(student_path), named.tracking_uri)
    assert served_model_for(named, ref, server.base_url) == "my-deployment"


@pytest.mark.slow
def test_the_vllm_engine_generates_in_order_and_refuses_what_cannot_fit_up_front(vllm_engine):
    from l2ray.eval.engines import ContextError, VllmLocalEngine

    engine = VllmLocalEngine.over(vllm_engine)
    requests = [_request(0, 12), _request(1, 12, InterventionConfig(force="zh")), _request(2, 5)]
    done = engine.generate(requests)
    assert [d.completion_tokens for d in done] == [12, 12, 5]
    assert all(d.starts_in_thinking and not d.failed for d in done)
    assert done[1].tag_mix == {"zh": 1.0}
    context = vllm_engine.codec.context_length
    too_long = [_request(3, 4), _request(4, context)]
    with pytest.raises(ContextError, match=r"sample .*exceeds the model's context.*lower eval.max_tokens"):
        engine.generate(too_long)


def test_a_run_whose_samples_cannot_fit_is_refused_before_any_engine_starts(
    student_path, tmp_path: Path, monkeypatch
):
    """No Ray pool, no engine: the driver checks every sample against the context first."""
    from l2ray.eval import pool as runner
    from l2ray.eval.engines import ContextError

    def no_pool(*args, **kwargs):
        raise AssertionError("the actor pool started for samples that cannot fit")

    monkeypatch.setattr(runner, "_run_actor_pool", no_pool)
    recipe = make_recipe(tmp_path, student_path, limit=2, max_tokens=10**6, engine="vllm")
    with pytest.raises(ContextError, match=r"sample mini/\S+ \(off\): prompt .* exceeds the model's context"):
        run_eval(recipe)
    assert not (recipe.run_dir / "eval").exists()


@pytest.mark.slow
@pytest.mark.kills_vllm_engine
def test_an_engine_process_killed_mid_run_fails_the_run_with_one_clear_error(vllm_engine):
    """The kernel's OOM killer, for real: SIGKILL the engine process while it decodes. The run must
    end with `EngineFailedError`, neither hanging (vLLM's own client would) nor recording failed samples."""
    import os
    import signal
    import threading

    from l2ray.eval.engines import EngineFailedError, VllmLocalEngine

    engine = VllmLocalEngine.over(vllm_engine)
    llm_engine = vllm_engine.llm.llm_engine
    [core] = llm_engine.engine_core.resources.engine_manager.processes
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["done"] = engine.generate([_request(seed, 3000) for seed in range(8)])
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    while thread.is_alive() and not llm_engine.has_unfinished_requests():
        thread.join(0.01)
    os.kill(core.pid, signal.SIGKILL)
    thread.join(120)
    assert not thread.is_alive(), "generation still waits on a dead engine"
    assert "done" not in outcome and isinstance(outcome["error"], EngineFailedError)
    message = str(outcome["error"])
    assert vllm_engine.model_path in message and "EngineDeadError" in message
    assert "eval.vllm.max_num_seqs" in message
    with pytest.raises(EngineFailedError, match="the vLLM engine failed"):  # and stays failed
        engine.generate([_request(0, 4)])


def _asking(question: str, key: str) -> SampleRequest:
    return SampleRequest(key, [{"role": "user", "content": question}], InterventionConfig(), 64, 0.0, 0)


def test_over_http_a_fault_is_sent_again_as_the_teacher_would_and_an_empty_answer_is_kept() -> None:
    # The teachers' misbehaving endpoint: each request's first attempt fails in one of six ways
    # (429 with Retry-After, 500, a reply held back past the idle timeout, a dropped connection,
    # malformed JSON, empty content), the second succeeds.
    with FakeTeacher(faults=True) as server:
        settings = HttpClientSettings(
            read_timeout_s=server.client_timeout_s, max_retries=3, backoff_base_s=0.01, backoff_max_s=0.2
        )
        engine = HttpEngine(server.base_url, "m", settings=settings, l2ray_body=False)
        done = engine.generate([_asking(f"What is 3 + {n}?", str(n)) for n in range(30)])
    assert set(server.fault_counts) == set(FAULTS)
    assert not [d.error for d in done if d.failed]
    # Empty content is the model's answer (graded as none), not a fault to sample again until it is
    # not: sent once. Every other request was sent twice, its fault then its answer.
    empty = [n for n, d in enumerate(done) if d.text == ""]
    assert len(empty) == server.fault_counts["empty"] > 0
    assert sorted(server.by_fingerprint.values()) == [1] * len(empty) + [2] * (30 - len(empty))
    assert all(rf"\boxed{{{n}}}" in d.text for n, d in enumerate(done) if n not in empty)


def test_over_http_a_stream_outlives_the_idle_timeout_and_failures_say_why_without_the_key() -> None:
    key = "sk-eval-secret-123"
    with FakeTeacher(trickle_chunks=30, trickle_gap_s=0.1, expected_key=key) as server:
        settings = HttpClientSettings(read_timeout_s=1.0, stream=True, max_retries=3, backoff_base_s=0.01)
        engine = HttpEngine(server.base_url, "m", api_key=key, settings=settings, l2ray_body=False)
        # 30 words 0.1 s apart: 3 s in all, three times the idle timeout, and never silent for 1 s.
        trickle, stall, always_500 = engine.generate(
            [
                _asking("[[TRICKLE]] What is 3 + 4?", "t"),
                _asking("[[STALL]] x", "s"),
                _asking("[[ALWAYS500]] x", "e"),
            ]
        )
        wrong_key = HttpEngine(server.base_url, "m", api_key="sk-wrong-456", settings=settings)
        [refused] = wrong_key.generate([_asking("What is 3 + 4?", "k")])
    assert (
        not trickle.failed and r"\boxed{4}" in (trickle.text or "") and trickle.usage["completion_tokens"] > 0
    )
    # A stream that went silent after words arrived was paid for: sent again once, never more.
    assert stall.error is not None and stall.error.endswith("[stream_broken after 2 attempt(s)]")
    assert always_500.error is not None and always_500.error.startswith("HTTP 500")
    assert always_500.error.endswith("[http_500 after 4 attempt(s)]")
    # A 401 is not retried, and the key the gateway echoed back is scrubbed.
    assert refused.error is not None and refused.error.endswith("[http_401 after 1 attempt(s)]")
    assert "sk-wrong-456" not in refused.error and "***" in refused.error
