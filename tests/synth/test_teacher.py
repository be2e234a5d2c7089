"""The teacher layer against a real HTTP server on 127.0.0.1: retries, errors, cache, key hygiene."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from fake_teacher import FakeTeacher
from synth_helpers import API_KEY, teacher_section

from l2ray.data.seeds import SeedRow
from l2ray.recipe import ROLES, TeacherConfig
from l2ray.synth.task import SynthTask
from l2ray.synth.worker import run_task
from l2ray.teacher import (
    CacheEntry,
    ResponseCache,
    SamplingParams,
    TeacherClient,
    TeacherError,
    build_teacher,
    ratelimit,
)
from l2ray.teacher.base import estimate_tokens
from l2ray.teacher.client import RoleClients, RoleSetup
from l2ray.teacher.local import TransformersTeacher
from l2ray.teacher.ratelimit import RateLimiter, TokenBucket
from l2ray.text import segment


def _client(server: FakeTeacher, cache_dir, **extra) -> TeacherClient:
    config = TeacherConfig(**teacher_section(server, **extra))
    return TeacherClient(build_teacher(config), ResponseCache(cache_dir), config, prompt_version="v1")


def _role_clients(server: FakeTeacher, cache_dir, **extra) -> RoleClients:
    config = TeacherConfig(**teacher_section(server, **extra))
    return RoleClients({role: RoleSetup(config, str(cache_dir)) for role in ROLES}, "v1")


def _ask_all(client: TeacherClient, contents: list[str]) -> list:
    async def run():
        try:
            return await asyncio.gather(
                *(client.ask([{"role": "user", "content": c}]) for c in contents), return_exceptions=True
            )
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_every_fault_is_retried_until_it_succeeds(fake_teacher, api_key, tmp_path):
    contents = [f"Target language: French (fr)\n\nFragment:\nthe value is ${i}$" for i in range(30)]
    answers = _ask_all(_client(fake_teacher, tmp_path), contents)
    assert all(not isinstance(a, Exception) for a in answers), answers
    assert set(fake_teacher.fault_counts) == {
        "rate_limit",
        "server_error",
        "timeout",
        "drop",
        "malformed",
        "empty",
    }
    assert fake_teacher.requests == 60  # each request: one faulty attempt, one good
    assert [a.text.endswith(f"${i}$") for i, a in enumerate(answers)] == [True] * 30
    assert not any(a.cached for a in answers)


def test_permanent_failures_raise_with_their_cause_and_never_the_key(fake_teacher, api_key, tmp_path):
    always_500, empty = _ask_all(_client(fake_teacher, tmp_path), ["[[ALWAYS500]] x", "[[EMPTY]] y"])
    assert isinstance(always_500, TeacherError) and always_500.reason == "http_500"
    assert always_500.attempts == 4  # max_retries=3
    assert isinstance(empty, TeacherError) and empty.reason == "empty_content"
    assert empty.attempts == 2  # a reply that arrived empty is paid for: one more try, not max_retries
    with FakeTeacher(expected_key="another-key") as strict:
        (denied,) = _ask_all(_client(strict, tmp_path / "c2"), ["hello"])
    assert isinstance(denied, TeacherError) and denied.reason == "http_401" and denied.attempts == 1
    # The server echoed the Authorization header into its error bodies; the errors carry them scrubbed.
    assert "***" in str(always_500) and "***" in str(denied)
    assert all(API_KEY not in str(e) for e in (always_500, empty, denied))


def test_a_failed_fragment_still_accounts_for_the_paid_ones_and_cut_off_replies_reject(api_key, tmp_path):
    seed = SeedRow(
        id="s",
        source="t",
        question="Let $a = 3$. What is $a$?",
        cot="So $a = 3$. Wait, [[ALWAYS500]] check $a$ again. Hmm, yes, $a = 3$.",
        answer="3",
    )
    assert len(segment(seed.cot)) == 3
    mixed = SynthTask(id="m", kind="mixed", languages=["en", "fr", "zh"], seed=seed)
    cut_seed = seed.model_copy(update={"question": "[[CUTOFF]] Let $a = 3$. What is $a$?"})
    whole = mixed.model_copy(update={"kind": "whole", "seed": cut_seed, "languages": ["fr"]})

    async def run(clients: RoleClients) -> tuple[dict, dict]:
        try:
            first = await run_task(mixed, clients)
            return first, await run_task(whole, clients)
        finally:
            await clients.aclose()

    with FakeTeacher() as server:  # no random faults: only the marked fragment fails
        outcome, cut = asyncio.run(run(_role_clients(server, tmp_path, max_retries=0)))
    assert outcome["error"]["reason"] == "teacher:http_500"
    # The zh fragment was answered (and paid for) although the fr one failed: it is in the log.
    assert [r["cached"] for r in outcome["requests"]] == [False]
    assert outcome["requests"][0]["completion_tokens"] > 0

    assert cut["error"]["reason"] == "truncated" and "max_tokens" in cut["error"]["detail"]
    # The question translation was cut: the solve that would build on it is never bought.
    assert [r["finish_reason"] for r in cut["requests"]] == ["length"]


def test_a_429_holds_back_every_request_of_the_actor_for_its_retry_after(api_key, tmp_path):
    with FakeTeacher() as server:
        client = _client(server, tmp_path, backoff_max_s=2.0)

        async def run() -> list:
            try:
                limited = asyncio.create_task(client.ask([{"role": "user", "content": "[[429]] first"}]))
                while not client.teacher.limiter.paused:  # the client has read the 429
                    await asyncio.sleep(0.01)
                others = [client.ask([{"role": "user", "content": f"other {i}"}]) for i in range(3)]
                return await asyncio.gather(limited, *others)
            finally:
                await client.aclose()

        answers = asyncio.run(run())
    assert len(answers) == 4
    refused_at = server.arrivals[0][0]
    later = [(at, text) for at, text in server.arrivals[1:]]
    assert len(later) == 4  # the retry and the three others
    # Nothing reached the server while Retry-After (0.5 s) ran, though the others were ready during it.
    assert all(at - refused_at >= 0.45 for at, _ in later), [round(at - refused_at, 3) for at, _ in later]


def test_tpm_estimates_count_wide_scripts_per_character():
    assert estimate_tokens("a" * 400) == 100
    assert estimate_tokens("题" * 100) == 100  # not 25: CJK runs about a token a character


def test_cache_answers_finished_requests_across_clients_and_dedupes_in_flight(api_key, tmp_path):
    with FakeTeacher(latency=0.05, expected_key=API_KEY) as server:
        first = _ask_all(_client(server, tmp_path), ["same", "same", "other"])
        assert server.requests == 2  # the two identical requests in flight were sent once
        again = _ask_all(_client(server, tmp_path), ["same", "other"])
        assert server.requests == 2
    assert [a.cached for a in again] == [True, True]
    assert again[0].text == first[0].text
    (shard,) = tmp_path.glob("*.jsonl")
    assert API_KEY not in shard.read_text()


def test_cache_skips_a_torn_last_line_and_serves_preloaded_entries(tmp_path):
    cache = ResponseCache(tmp_path, preload=[CacheEntry("recorded", "m", "from memory")])
    cache.put(CacheEntry("fp-1", "m", "one", 3, 4))
    cache.close()
    with (tmp_path / "shard-crashed.jsonl").open("w") as fh:
        fh.write(CacheEntry("fp-2", "m", "two").to_json() + "\n" + '{"fingerprint": "fp-3", "mo')
    reopened = ResponseCache(tmp_path)
    assert reopened.get("fp-1").completion_tokens == 4 and reopened.get("fp-2").text == "two"
    assert "fp-3" not in reopened and "recorded" not in reopened  # preloaded entries are not written
    assert cache.get("recorded").text == "from memory"


def test_a_token_bucket_refills_at_its_rate(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    bucket = TokenBucket(rate_per_minute=60)
    assert bucket.wait_time(60) == 0
    bucket.level -= 60
    assert bucket.wait_time(1) == 1.0  # one unit refills in a second
    clock[0] += 0.25
    assert bucket.wait_time(1) == 0.75


def test_completion_tokens_count_against_the_tpm_budget():
    limiter = RateLimiter(requests_per_minute=6000, tokens_per_minute=600)
    asyncio.run(limiter.acquire(tokens=600))
    limiter.charge_tokens(100)
    assert limiter._tokens.wait_time(1) > 0  # the completion tokens went over the budget


def test_usage_cost_uses_the_price_table():
    config = TeacherConfig(price_per_mtok_input=1.0, price_per_mtok_output=4.0)
    from l2ray.teacher.base import Usage

    assert Usage(1_000_000, 500_000).cost(config) == pytest.approx(3.0)
    assert Usage(10, 10).cost(TeacherConfig()) == 0.0


def test_local_transformers_teacher_generates_with_the_offline_student(student_path):
    teacher = TransformersTeacher(str(student_path), device="cpu")
    reply = asyncio.run(
        teacher.complete([{"role": "user", "content": "What is 2+3?"}], SamplingParams(0.0, 1.0, 6))
    )
    assert reply.usage.completion_tokens == 6 and reply.usage.prompt_tokens > 0
    assert reply.finish_reason == "length"


def test_translate_questions_shares_the_synthesis_prompt_and_cache(api_key, tmp_path):
    from l2ray.recipe import recipe_from_dict
    from l2ray.synth.api import MissingResponsesError, translate_questions

    questions = ["Let $a = 3$. What is $a$?", "Compute $2 + 2$."]
    with FakeTeacher(expected_key=API_KEY) as server:
        teacher = {**teacher_section(server), "cache_dir": str(tmp_path / "cache")}
        recipe = recipe_from_dict({"name": "p", "output_dir": str(tmp_path), "teacher": teacher})
        first = translate_questions(recipe, questions, "de")
        again = translate_questions(recipe, questions, "de")
        assert server.requests == 2
    assert first == again and first[0].endswith("$a = 3$ $a$") and first[0].startswith("Wir ordnen")
    offline = recipe_from_dict(
        {"name": "p", "output_dir": str(tmp_path), "teacher": {"cache_dir": str(tmp_path / "c2")}}
    )
    with pytest.raises(MissingResponsesError, match="question 1 into ja"):
        translate_questions(offline, questions, "ja")


def test_retry_after_is_honoured_and_capped_and_backoff_is_jittered():
    import email.utils

    from l2ray.teacher.transport import Attempts, Fault, _retry_after

    assert _retry_after("1.5") == 1.5 and _retry_after(None) is None and _retry_after("soon") is None
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 < _retry_after(in_a_minute) <= 60
    config = TeacherConfig(base_url="http://127.0.0.1:9/v1", backoff_base_s=1, backoff_max_s=10)
    assert Attempts(config).after(Fault("rate_limited", "HTTP 429", retry_after=3.0)) == 3.0
    assert Attempts(config).after(Fault("rate_limited", "HTTP 429", retry_after=600)) == 10

    def after_six_failures() -> float | None:
        attempts = Attempts(config)
        return [attempts.after(Fault("http_503", "HTTP 503")) for _ in range(6)][-1]

    delays = {after_six_failures() for _ in range(20)}
    assert len(delays) > 1 and all(d is not None and 0 <= d <= 10 for d in delays)


def test_a_cut_off_reply_is_paid_once_and_an_empty_one_at_most_twice(api_key, tmp_path):
    contents = ["[[CUTEMPTY]] think long", "[[CUTOFF]] translate", "[[EMPTY]] nothing", "fine"]
    with FakeTeacher() as server:
        client = _client(server, tmp_path, max_retries=6)
        fingerprints = [client.fingerprint([{"role": "user", "content": c}]) for c in contents]
        cut_empty, cut, empty, fine = _ask_all(client, contents)
        # A rerun finds the cut-off replies in the cache: still nothing is sent again for them.
        again = _ask_all(_client(server, tmp_path, max_retries=6), contents[:2])
    paid = [server.paid[fp] for fp in fingerprints]
    assert paid == [1, 1, 2, 1], paid
    assert [server.by_fingerprint[fp] for fp in fingerprints] == [1, 1, 2, 1]  # nothing unpaid either
    assert cut_empty.finish_reason == cut.finish_reason == "length" and fine.finish_reason == "stop"
    assert cut_empty.text.startswith("<think>")  # the reasoning that did arrive is kept, for the record
    assert isinstance(empty, TeacherError) and empty.reason == "empty_content"
    assert [a.cached for a in again] == [True, True] and [a.finish_reason for a in again] == ["length"] * 2


def test_a_long_reply_that_keeps_arriving_never_times_out_and_a_stalled_one_does(api_key, tmp_path):
    # The reply takes 30 x 0.1 s = 3 s, three times the 1 s idle timeout: a total timeout of 1 s
    # would cut it; an idle-read timeout sees a byte every 0.1 s and waits for the end.
    with FakeTeacher(trickle_chunks=30, trickle_gap_s=0.1) as server:
        client = _client(server, tmp_path, read_timeout_s=1.0, max_retries=1)
        slow, stalled = _ask_all(client, ["[[TRICKLE]] a very long reasoning", "[[STALL]] a dead stream"])
        slow_fp = client.fingerprint([{"role": "user", "content": "[[TRICKLE]] a very long reasoning"}])
    assert not isinstance(slow, Exception), slow
    assert slow.text.endswith("$\\boxed{0}$.") and server.by_fingerprint[slow_fp] == 1  # sent once
    assert isinstance(stalled, TeacherError) and stalled.reason == "timeout" and stalled.attempts == 2
    assert "silence 1.0s" in str(stalled)


def test_a_streamed_reply_is_the_same_reply_and_silence_between_tokens_is_what_times_out(api_key, tmp_path):
    """An endpoint that sends nothing until it is done cannot tell a long reply from a dead one; with
    ``stream: true`` each token resets the idle timeout: 30 words 0.1 s apart (3 s) pass a 1 s timeout,
    and a stream that goes silent or drops its connection after its first words is a paid fault,
    retried once."""
    contents = [
        "Target language: French (fr)\n\nFragment:\nthe value is $7$",
        "[[TRICKLE]] " + "a very long reasoning " * 8,
        "[[CUTEMPTY]] thinking until cut off",
        "[[STALL]] a dead stream",
        "[[HANGUP]] a broken stream",
    ]
    with FakeTeacher(trickle_gap_s=0.1) as server:
        plain = _ask_all(_client(server, tmp_path / "plain"), contents[:1])
        streamed = _ask_all(
            _client(server, tmp_path / "stream", stream=True, read_timeout_s=1.0, max_retries=3), contents
        )
        fingerprints = [
            _client(server, tmp_path / "x").fingerprint([{"role": "user", "content": text}])
            for text in contents[3:]
        ]
    assert not any(isinstance(a, Exception) for a in streamed[:3]), streamed
    assert streamed[0].text == plain[0].text and streamed[0].usage == plain[0].usage
    assert streamed[1].text.endswith("$\\boxed{0}$.") and streamed[1].usage.completion_tokens > 0
    assert streamed[2].finish_reason == "length" and streamed[2].text.startswith("<think>")
    for broken, fingerprint in zip(streamed[3:], fingerprints, strict=True):
        assert isinstance(broken, TeacherError) and broken.reason == "stream_broken" and broken.attempts == 2
        assert server.paid[fingerprint] == 2  # the paid partial stream was sent once more, not max_retries


def test_bare_429s_shrink_the_in_flight_window_until_they_stop_and_every_request_finishes(api_key, tmp_path):
    # An endpoint that takes 4 requests at a time and refuses the rest with a 429 without Retry-After.
    with FakeTeacher(latency=0.02, capacity=4) as server:
        client = _client(
            server, tmp_path, concurrency=32, max_retries=40, backoff_base_s=0.01, backoff_max_s=0.05
        )
        window = client.teacher.window
        answers = _ask_all(client, [f"request {i}" for i in range(240)])
    assert all(not isinstance(a, Exception) for a in answers), [
        a for a in answers if isinstance(a, Exception)
    ][:3]
    assert sum(server.succeeded.values()) == 240  # each request answered once
    refused = server.refused
    third = len(refused) // 3
    early, late = sum(refused[:third]) / third, sum(refused[-third:]) / third
    assert late < early / 2, (early, late)  # the 429 rate falls as the window adapts
    assert window.limit < 32 and window.in_flight == 0


def test_a_malformed_reply_is_quoted_without_any_piece_of_the_key():
    """The quote of a body is cut after the key is replaced: a key across the cut leaves no prefix."""
    from l2ray.teacher.transport import Fault, parse_chat_completion

    raw = ("x" * 110 + API_KEY + " echoed").encode()  # the key straddles the 120-character quote
    with pytest.raises(Fault) as caught:
        parse_chat_completion(raw, API_KEY)
    assert caught.value.reason == "malformed_json" and "***" in caught.value.detail
    assert API_KEY[:6] not in caught.value.detail
