r"""A deterministic OpenAI-compatible teacher on 127.0.0.1 that misbehaves on purpose.

It understands l2ray's three synthesis prompts and answers each in the requested language, keeping
every math span of the source (so translations verify): a question or a fragment becomes a fixed
sentence in the target language followed by the source's math; a solve request becomes a short
reasoning in the language and ``\boxed{N}``, N the last number of the question.

Faults (``faults=True``): the first attempt of each request fails in one of six ways chosen by its
fingerprint — 429 with ``Retry-After``, 500, a reply held back until the server stops (the client
times out: ``client_timeout_s`` suits the server), a dropped connection, malformed JSON, empty
content — and the retry succeeds. Text markers make a request
fail every time: ``[[ALWAYS500]]`` (HTTP 500) and ``[[EMPTY]]`` (empty content); ``[[429]]`` gets a
429 with ``Retry-After: 0.5`` on its first attempt; ``[[STALL]]`` starts a reply and then goes
silent until the server stops; ``[[HANGUP]]`` starts a streamed reply and drops the connection.
Others change a successful reply: ``[[CUTOFF]]`` (``finish_reason: length``), ``[[CUTEMPTY]]``
(cut off inside the reasoning: empty content, ``length``),
``[[TRICKLE]]`` (the reply arrives slowly: ``trickle_chunks`` blank lines ``trickle_gap_s`` apart
before the JSON, as DeepSeek keeps a long reply alive; streamed, each word ``trickle_gap_s`` after
the last), ``[[MARKUP]]`` (a language tag in the text) and ``[[BADUSAGE]]`` (``usage`` is not an
object). A request with ``stream: true`` gets its reply as server-sent events (word-sized deltas,
the usage chunk when ``stream_options.include_usage``, ``[DONE]``).

``capacity`` (optional) makes it an overloaded endpoint: a request arriving while ``capacity``
others are in flight gets a 429 *without* ``Retry-After`` (``refused`` records, per arrival, whether
it was). ``paid`` counts, per fingerprint, the requests that produced a reply (what a real endpoint
bills: good, empty, malformed or cut off). ``served_model`` is the model id replies name (default:
the requested one).

The batch API (``/v1/files``, ``/v1/batches``) answers a batch on its ``batch_polls``-th poll; a line
whose prompt holds ``[[BATCHFAIL]]`` lands in the error file. ``batch_lines`` counts, per custom id,
the batches that carried it.

Run in a thread (tests: ``with FakeTeacher() as server: server.base_url``) or as a process
(bench: ``python tests/fake_teacher.py --latency 0.1`` prints the base URL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import re
import threading
import time
from collections import Counter

from aiohttp import web

PHRASES = {
    "zh": "我们先仔细整理题目中的条件，然后一步一步地计算结果。",
    "ja": "まず問題の条件をていねいに整理して、それから順番に計算していきます。",
    "fr": "Reprenons soigneusement les données du problème, puis calculons le résultat étape par étape.",
    "de": "Wir ordnen zuerst sorgfältig die Angaben der Aufgabe und rechnen dann Schritt für Schritt weiter.",
    "en": "Let us carefully restate the conditions of the problem and then compute the result step by step.",
}
ANSWER = {
    "zh": "所以最终答案是",
    "ja": "したがって最終的な答えは",
    "fr": "Donc la réponse finale est",
    "de": "Also ist die endgültige Antwort",
    "en": "So the final answer is",
}
_TARGET = re.compile(r"Target language: [^()\n]+ \(([a-z]{2,3})\)")
_SOLVE = re.compile(r"only in [^()\n]+ \(([a-z]{2,3})\)")
_MATH = re.compile(r"\$\$.*?\$\$|\\\[.*?\\\]|\\\(.*?\\\)|\$[^$]*\$|\\boxed\{[^{}]*\}", re.S)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
FAULTS = ("rate_limit", "server_error", "timeout", "drop", "malformed", "empty")


class FakeTeacher:
    """The server. Counters (``requests``, ``by_fingerprint``, ``succeeded``, ``faults``) are read
    by tests; ``expected_key`` (if set) must arrive as the bearer token, else 401.

    ``client_timeout_s`` is the client timeout a test should use: short when the timeout fault is
    on (each one costs it), generous otherwise, so that a good reply slowed by a loaded machine is
    never taken for a fault and retried (tests count requests exactly). ``slow_s`` bounds how long
    a held "timeout" reply waits where the server is never stopped (run as a process by the bench).
    """

    def __init__(
        self,
        latency: float = 0.0,
        faults: bool = False,
        slow_s: float = 60.0,
        expected_key: str | None = None,
        port: int = 0,
        capacity: int | None = None,
        served_model: str | None = None,
        trickle_chunks: int = 20,
        trickle_gap_s: float = 0.1,
        batch_polls: int = 2,
    ) -> None:
        self.latency, self.faults, self.slow_s = latency, faults, slow_s
        self.capacity, self.served_model = capacity, served_model
        self.trickle_chunks, self.trickle_gap_s = trickle_chunks, trickle_gap_s
        self.refused: list[bool] = []
        self.batch_polls = batch_polls
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.batch_lines: Counter[str] = Counter()  # custom_id -> how many batches carried it
        self._polls: Counter[str] = Counter()
        self.paid: Counter[str] = Counter()
        self._in_flight = 0
        self.client_timeout_s = 2.0 if faults else 30.0
        self.expected_key, self.port = expected_key, port
        self.requests = 0
        self.arrivals: list[tuple[float, str]] = []  # (time.monotonic(), the last message) per request
        self.by_fingerprint: Counter[str] = Counter()
        self.succeeded: Counter[str] = Counter()
        self.fault_counts: Counter[str] = Counter()
        self._attempts: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{file_id}/content", self._file_content)
        app.router.add_post("/v1/batches", self._create_batch)
        app.router.add_get("/v1/batches/{batch_id}", self._get_batch)
        app.router.add_get("/v1/batches", self._list_batches)
        return app

    async def start_async(self) -> None:
        self._stopping = asyncio.Event()
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the port the OS picked

    def __enter__(self) -> FakeTeacher:
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.start_async())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._runner is not None and self._stopping is not None
        self._loop.call_soon_threadsafe(self._stopping.set)  # held replies end; cleanup waits on them
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self._in_flight += 1
        try:
            return await self._serve(request)
        finally:
            self._in_flight -= 1

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        auth = request.headers.get("Authorization", "")
        if self.expected_key and auth != f"Bearer {self.expected_key}":
            # Like some real gateways, the error echoes what it got: the client must scrub it.
            return web.json_response({"error": f"bad key in {auth!r}"}, status=401)
        body = await request.json()
        fingerprint = request.headers.get("X-L2ray-Fingerprint") or _hash(body)
        self.by_fingerprint[fingerprint] += 1
        self._attempts[fingerprint] += 1
        text = "\n".join(m["content"] for m in body["messages"])
        self.arrivals.append((time.monotonic(), body["messages"][-1]["content"]))
        if self.capacity is not None:
            self.refused.append(self._in_flight > self.capacity)
            if self.refused[-1]:
                return web.json_response({"error": "server busy"}, status=429)
        if self.latency:
            await asyncio.sleep(self.latency)
        fault = self._fault(fingerprint, text)
        if fault:
            self.fault_counts[fault] += 1
            response = await self._misbehave(fault, request, auth)
            if response is not None:
                return response
        self.succeeded[fingerprint] += 1
        self.paid[fingerprint] += 1
        reply = self._completion(body, text)
        if body.get("stream"):
            return await self._stream(
                request, reply, body, gap_s=self.trickle_gap_s if "[[TRICKLE]]" in text else 0
            )
        if "[[TRICKLE]]" in text:
            return await self._trickle(request, json.dumps(reply).encode())
        return web.json_response(reply)

    async def _stream(
        self, request: web.Request, reply: dict, body: dict, gap_s: float
    ) -> web.StreamResponse:
        """``reply`` as server-sent events: content (and reasoning) in word-sized deltas ``gap_s``
        apart, the finish reason on the last, the usage chunk when asked for, ``[DONE]``."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        choice, model = reply["choices"][0], reply["model"]
        deltas = [
            {key: piece}
            for key in ("reasoning_content", "content")
            for piece in re.findall(r"\S+\s*|\s+", choice["message"].get(key) or "")
        ]
        for index, delta in enumerate(deltas or [{"content": ""}]):
            last = index == max(len(deltas), 1) - 1
            finish = choice["finish_reason"] if last else None
            await self._event(
                response, {"model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            )
            await asyncio.sleep(gap_s)
        if (body.get("stream_options") or {}).get("include_usage"):
            await self._event(response, {"model": model, "choices": [], "usage": reply["usage"]})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    @staticmethod
    async def _event(response: web.StreamResponse, chunk: dict) -> None:
        await response.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())

    def _completion(self, body: dict, text: str) -> dict:
        """The chat completion a good (or a marked) request gets."""
        content = answer(body["messages"]) + (" <|lang:de|>" if "[[MARKUP]]" in text else "")
        message = {"role": "assistant", "content": content}
        if "[[CUTEMPTY]]" in text:  # a reasoning model cut off while still thinking
            message = {"role": "assistant", "content": "", "reasoning_content": "Let me think. " * 20}
        usage = {"prompt_tokens": len(text) // 4, "completion_tokens": len(content) // 4}
        cut = "[[CUTOFF]]" in text or "[[CUTEMPTY]]" in text
        return {
            "id": "fake",
            "object": "chat.completion",
            "model": self.served_model or body.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": "length" if cut else "stop"}],
            "usage": [1] if "[[BADUSAGE]]" in text else usage,
        }

    # --- the batch API: /v1/files + /v1/batches -----------------------------------------------------

    async def _upload(self, request: web.Request) -> web.Response:
        if self.expected_key and request.headers.get("Authorization") != f"Bearer {self.expected_key}":
            return web.json_response({"error": "bad key"}, status=401)
        form = await request.post()
        upload = form["file"]
        file_id = f"file-{len(self.files)}"
        self.files[file_id] = upload.file.read() if hasattr(upload, "file") else bytes(upload)
        assert form["purpose"] == "batch"
        return web.json_response({"id": file_id, "object": "file", "purpose": "batch"})

    async def _create_batch(self, request: web.Request) -> web.Response:
        body = await request.json()
        batch_id = f"batch_{len(self.batches)}"
        self.batches[batch_id] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": body["endpoint"],
            "input_file_id": body["input_file_id"],
            "completion_window": body["completion_window"],
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(time.time()),
            "metadata": body.get("metadata"),
        }
        self._polls[batch_id] = 0
        return web.json_response(self.batches[batch_id])

    async def _get_batch(self, request: web.Request) -> web.Response:
        batch = self.batches[request.match_info["batch_id"]]
        self._polls[batch["id"]] += 1
        if batch["status"] != "completed" and self._polls[batch["id"]] >= self.batch_polls:
            self._run_batch(batch)
        elif batch["status"] == "validating":
            batch["status"] = "in_progress"
        return web.json_response(batch)

    async def _list_batches(self, request: web.Request) -> web.Response:
        """Every batch, newest first, on one page (as the provider lists them)."""
        newest_first = list(reversed(self.batches.values()))
        return web.json_response({"object": "list", "data": newest_first, "has_more": False})

    async def _file_content(self, request: web.Request) -> web.Response:
        return web.Response(body=self.files[request.match_info["file_id"]], content_type="application/jsonl")

    def _run_batch(self, batch: dict) -> None:
        """Answer every line; a line whose prompt holds ``[[BATCHFAIL]]`` goes to the error file."""
        done, failed = [], []
        for raw in self.files[batch["input_file_id"]].decode().splitlines():
            line = json.loads(raw)
            body, custom_id = line["body"], line["custom_id"]
            self.batch_lines[custom_id] += 1
            text = "\n".join(m["content"] for m in body["messages"])
            if "[[BATCHFAIL]]" in text:
                error = {"code": "server_error", "message": "the line failed"}
                failed.append({"id": "r", "custom_id": custom_id, "response": None, "error": error})
                continue
            self.paid[custom_id] += 1
            response = {"status_code": 200, "request_id": "req", "body": self._completion(body, text)}
            done.append({"id": "r", "custom_id": custom_id, "response": response, "error": None})
        for key, lines in (("output_file_id", done), ("error_file_id", failed)):
            if lines:
                file_id = f"file-{len(self.files)}"
                self.files[file_id] = "".join(json.dumps(x) + "\n" for x in lines).encode()
                batch[key] = file_id
        batch["status"] = "completed"
        batch["request_counts"] = {
            "total": len(done) + len(failed),
            "completed": len(done),
            "failed": len(failed),
        }

    async def _trickle(self, request: web.Request, payload: bytes) -> web.StreamResponse:
        """Headers at once, then blank lines while the "model" works, then the JSON (leading
        whitespace is valid JSON): a reply far longer than the client's idle timeout, never silent."""
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for _ in range(self.trickle_chunks):
            await asyncio.sleep(self.trickle_gap_s)
            await response.write(b"\n")
        await response.write(payload)
        await response.write_eof()
        return response

    def _fault(self, fingerprint: str, text: str) -> str | None:
        if "[[429]]" in text and self._attempts[fingerprint] == 1:
            return "rate_limit_long"
        if "[[ALWAYS500]]" in text:
            return "server_error"
        if "[[EMPTY]]" in text:
            return "empty"
        if "[[STALL]]" in text:
            return "stall"
        if "[[HANGUP]]" in text:
            return "hangup"
        if self.faults and self._attempts[fingerprint] == 1:
            return FAULTS[int(fingerprint[:8], 16) % len(FAULTS)]
        return None

    async def _misbehave(self, fault: str, request: web.Request, auth: str) -> web.StreamResponse | None:
        if fault == "rate_limit":
            return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "0.05"})
        if fault == "rate_limit_long":
            return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "0.5"})
        if fault == "server_error":
            return web.json_response({"error": f"boom while serving {auth!r}"}, status=500)
        if fault == "timeout":
            # Held on an event, not a sleep: aiohttp does not cancel a handler when its client
            # gives up, and a stopping server waits for the handlers still running.
            assert self._stopping is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.slow_s)
            return None
        if fault == "stall":  # a reply that starts, then goes silent for good
            assert self._stopping is not None
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            if (await request.json()).get("stream"):  # a few words arrive (and are billed) first
                self.paid[request.headers.get("X-L2ray-Fingerprint", "")] += 1
                await self._event(response, {"choices": [{"index": 0, "delta": {"content": "Let me"}}]})
            else:
                await response.write(b"\n")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.slow_s)
            return response
        if fault == "hangup":  # a stream that starts (billed), then the connection drops
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            self.paid[request.headers.get("X-L2ray-Fingerprint", "")] += 1
            await self._event(response, {"choices": [{"index": 0, "delta": {"content": "Let me"}}]})
            assert request.transport is not None
            request.transport.close()
            return response
        if fault == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response()  # never reaches the client
        fingerprint = request.headers.get("X-L2ray-Fingerprint", "")
        self.paid[fingerprint] += 1  # a reply was produced: billed, though useless
        if fault == "malformed":
            return web.Response(text='{"choices": [', content_type="application/json")
        return web.json_response(
            {"choices": [{"message": {"role": "assistant", "content": ""}, "finish_reason": "stop"}]}
        )


def answer(messages: list[dict[str, str]]) -> str:
    """The deterministic reply to one of l2ray's synthesis prompts."""
    user = messages[-1]["content"]
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    target = _TARGET.search(user)
    if target:
        source = user.split("\n\n")[-1].split(":", 1)[-1]
        return " ".join([PHRASES.get(target.group(1), PHRASES["en"]), *_MATH.findall(source)])
    solve = _SOLVE.search(system)
    lang = solve.group(1) if solve else "en"
    question = user.split("\n\n")[0]
    numbers = _NUMBER.findall(" ".join(_MATH.findall(question)) or question)
    result = numbers[-1] if numbers else "0"
    phrase = PHRASES.get(lang, PHRASES["en"])
    return f"<think>\n{phrase}\n{phrase}\n</think>\n\n{ANSWER.get(lang, ANSWER['en'])} $\\boxed{{{result}}}$."


def _hash(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.1)
    args = parser.parse_args()
    server = FakeTeacher(latency=args.latency, port=args.port)

    async def run() -> None:
        await server.start_async()
        print(server.base_url, flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
