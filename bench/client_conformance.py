"""Third-party clients against `l2ray serve`: the official openai client, LiteLLM and lm-eval.

Each configuration (a model × an engine × a graph shape) is served by ``l2ray serve`` from the
project's virtualenv (a subprocess), and the clients run here, in a Python that has them — they are
not l2ray's dependencies:

    python3 -m venv /tmp/vc && /tmp/vc/bin/pip install litellm "lm-eval[api]" openai
    /tmp/vc/bin/python bench/client_conformance.py              # tiny student and SmolLM2, both engines
    /tmp/vc/bin/python bench/client_conformance.py --models tiny --engines vllm --graphs direct

Every call is one check; a check fails when the client raised or got a wrong shape. A 400 the README
lists as a deviation (``presence_penalty``) is expected and counted apart. The report is a table of
failures per client and configuration, and the failures' messages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-conformance-0001"
QUESTION = [{"role": "user", "content": "What is 7 * 8?"}]


def main() -> None:
    args = _parse()
    results: list[tuple[str, str, str, str]] = []  # (configuration, client, check, outcome)
    for model in args.models:
        for engine in args.engines:
            for graph in args.graphs:
                label = f"{model}/{engine}/{graph}"
                print(f"== {label}", flush=True)
                with _server(args, model, engine, graph) as url:
                    for client, checks in (("openai", openai_checks), ("litellm", litellm_checks)):
                        for name, check in checks(url):
                            results.append((label, client, name, _outcome(check)))
                            print(f"  {client:8} {name:40} {results[-1][3]}", flush=True)
                    outcome = _outcome(lambda: lm_eval_check(url, args.lm_eval_limit))
                    results.append((label, "lm-eval", "generate_until via chat", outcome))
                    print(f"  lm-eval  {'generate_until via chat':40} {outcome}", flush=True)
    _report(results)


def openai_checks(url: str) -> list[tuple[str, Callable[[], str]]]:
    """The official client: plain, streamed (usage chunk), n=2 streamed, raw completions, models,
    16 concurrent requests, and a refused parameter (400)."""
    import openai

    client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)

    def plain() -> str:
        reply = client.chat.completions.create(model="l2ray", messages=QUESTION, max_tokens=24)
        usage = reply.usage.model_dump()
        assert reply.choices[0].finish_reason in ("stop", "length")
        assert usage["completion_tokens"] == usage["thinking_tokens"] + usage["answer_tokens"], usage
        return f"{usage['completion_tokens']} tokens"

    def answer_now() -> str:  # l2ray's own option through extra_body: no thinking, the answer at once
        reply = client.chat.completions.create(
            model="l2ray", messages=QUESTION, max_tokens=24, extra_body={"l2ray": {"max_thinking_tokens": 0}}
        )
        usage = reply.usage.model_dump()
        assert usage["thinking_tokens"] == 0 and usage["answer_tokens"] == usage["completion_tokens"], usage
        return f"{len(reply.choices[0].message.content)} characters of answer"

    def streamed() -> str:
        stream = client.chat.completions.create(
            model="l2ray",
            messages=QUESTION,
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
        )
        *chunks, last = list(stream)
        usage = last.usage.model_dump()  # an untrained SmolLM2 may stop at once: 0 tokens is an answer
        assert (
            last.choices == []
            and usage["completion_tokens"] == usage["thinking_tokens"] + usage["answer_tokens"]
        )
        return f"{len(chunks)} chunks, {usage['completion_tokens']} tokens"

    def two_streamed() -> str:
        stream = client.chat.completions.create(
            model="l2ray", messages=QUESTION, max_tokens=8, n=2, stream=True
        )
        indexes = {c.choices[0].index for c in stream if c.choices}
        assert indexes == {0, 1}, indexes
        return "indexes 0, 1"

    def completion() -> str:
        reply = client.completions.create(model="l2ray", prompt="7 * 8 =", max_tokens=8)
        assert isinstance(reply.choices[0].text, str)
        return f"{reply.usage.completion_tokens} tokens"

    def models() -> str:
        assert [m.id for m in client.models.list()] == ["l2ray"]
        return "l2ray"

    def concurrent() -> str:
        async def run() -> int:
            async with openai.AsyncOpenAI(base_url=url, api_key=KEY, max_retries=0) as aclient:
                calls = (
                    aclient.chat.completions.create(model="l2ray", messages=QUESTION, max_tokens=16)
                    for _ in range(16)
                )
                return len(await asyncio.gather(*calls))

        return f"{asyncio.run(run())} of 16"

    def refused() -> str:
        try:
            client.chat.completions.create(
                model="l2ray", messages=QUESTION, max_tokens=4, presence_penalty=1.0
            )
        except openai.BadRequestError as exc:
            return f"expected 400: {exc.body['message'][:60]}"
        raise AssertionError("presence_penalty was accepted")

    return [
        ("chat", plain),
        ("chat, l2ray thinking budget 0", answer_now),
        ("chat stream + usage chunk", streamed),
        ("chat n=2 stream", two_streamed),
        ("completions", completion),
        ("models", models),
        ("16 concurrent chats", concurrent),
        ("presence_penalty (a listed deviation)", refused),
    ]


def litellm_checks(url: str) -> list[tuple[str, Callable[[], str]]]:
    """LiteLLM's OpenAI-compatible provider: plain, streamed, 16 concurrent."""
    import litellm

    common = {
        "model": "openai/l2ray",
        "api_base": url,
        "api_key": KEY,
        "messages": QUESTION,
        "num_retries": 0,
    }

    def plain() -> str:
        reply = litellm.completion(**common, max_tokens=24)
        assert isinstance(reply.choices[0].message.content, str)
        return f"{reply.usage.completion_tokens} tokens"

    def streamed() -> str:
        chunks = list(litellm.completion(**common, max_tokens=24, stream=True))
        assert chunks and chunks[-1].choices[0].finish_reason in ("stop", "length")
        return f"{len(chunks)} chunks"

    def concurrent() -> str:
        async def run() -> int:
            replies = await asyncio.gather(*(litellm.acompletion(**common, max_tokens=16) for _ in range(16)))
            return len(replies)

        return f"{asyncio.run(run())} of 16"

    return [("completion", plain), ("completion stream", streamed), ("16 concurrent acompletion", concurrent)]


def lm_eval_check(url: str, limit: int) -> str:
    """lm-eval's ``local-chat-completions`` model on a generate_until task over a local JSONL file."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    folder = Path(tempfile.mkdtemp())
    rows = [
        {"question": f"What is {a} + {b}?", "answer": str(a + b)}
        for a, b in zip(range(1, 40), range(40, 79), strict=True)
    ]
    (folder / "arith.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "arith.yaml").write_text(
        "task: l2ray_arith\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {folder / 'arith.jsonl'}\n"
        "test_split: test\noutput_type: generate_until\n"
        'doc_to_text: "{{question}}"\ndoc_to_target: "{{answer}}"\n'
        "generation_kwargs:\n  until: []\n  max_gen_toks: 24\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n"
    )
    os.environ["OPENAI_API_KEY"] = KEY
    results = simple_evaluate(
        model="local-chat-completions",
        model_args=f"model=l2ray,base_url={url}/chat/completions,num_concurrent=4,max_retries=1",
        tasks=["l2ray_arith"],
        task_manager=TaskManager(include_path=str(folder)),
        apply_chat_template=True,
        limit=limit,
    )
    samples = results["results"]["l2ray_arith"]
    return f"{limit} samples scored (exact_match {samples['exact_match,none']:.2f})"


def _outcome(check: Callable[[], str]) -> str:
    try:
        return f"ok: {check()}"
    except Exception as exc:  # a failed check is the measurement
        return f"FAILED: {type(exc).__name__}: {str(exc)[:200]}"


def _report(results: list[tuple[str, str, str, str]]) -> None:
    print("\nfailures per client and configuration (checks that failed / checks)")
    configurations = sorted({r[0] for r in results})
    for client in ("openai", "litellm", "lm-eval"):
        cells = []
        for configuration in configurations:
            mine = [r for r in results if r[0] == configuration and r[1] == client]
            cells.append(f"{configuration} {sum(r[3].startswith('FAILED') for r in mine)}/{len(mine)}")
        print(f"  {client:8} " + ", ".join(cells))
    for configuration, client, name, outcome in results:
        if outcome.startswith("FAILED"):
            print(f"  {configuration} {client} {name}: {outcome}")


class _server:
    """``l2ray serve`` from the project's virtualenv, until the block ends; yields its ``/v1`` URL."""

    def __init__(self, args: argparse.Namespace, model: str, engine: str, graph: str) -> None:
        self.port = args.port
        settings = [f"serve.engine={engine}", f"serve.graph={graph}", "serve.api_keys_env=CONFORMANCE_KEYS"]
        settings += [
            "serve.vllm.dtype=float32",
            "serve.vllm.enforce_eager=true",
            "serve.max_tokens_limit=512",
        ]
        self.command = [str(args.server_bin / "l2ray"), "serve", "--model", _model_uri(args, model)]
        self.command += ["--port", str(self.port)] + [part for s in settings for part in ("--set", s)]

    def __enter__(self) -> str:
        env = {**os.environ, "CONFORMANCE_KEYS": KEY, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
        self.log = tempfile.NamedTemporaryFile("w", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            self.command, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"l2ray serve exited with {self.process.returncode}; see {self.log.name}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=5).status_code == 200:
                    return f"http://127.0.0.1:{self.port}/v1"
            except httpx.HTTPError:
                pass
            time.sleep(2)
        raise SystemExit(f"l2ray serve was not ready in 600 s; see {self.log.name}")

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.process.pid, signal.SIGINT)  # l2ray serve shuts its own Ray cluster down
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=120)
        with contextlib.suppress(ProcessLookupError):  # what is left of its group; never `ray stop`,
            os.killpg(self.process.pid, signal.SIGKILL)  # which would stop every cluster on the machine


def _model_uri(args: argparse.Namespace, model: str) -> str:
    """bench/students.py's student of that size, built by the server's Python: ``tiny`` (heads vLLM's
    CPU build can run) or ``smollm2`` (the real weights with the reasoning vocabulary)."""
    folder = Path(tempfile.mkdtemp()) / "student"
    code = "import sys, pathlib; sys.path.insert(0, 'bench'); from students import build_student_of_size; "
    code += f"print(build_student_of_size({model!r}, pathlib.Path({str(folder)!r})))"
    built = subprocess.run(
        [str(args.server_bin / "python"), "-c", code], cwd=REPO, check=True, capture_output=True
    )
    return built.stdout.decode().strip().splitlines()[-1]


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", choices=["tiny", "smollm2"], default=["tiny", "smollm2"])
    parser.add_argument(
        "--engines", nargs="+", choices=["transformers", "vllm"], default=["transformers", "vllm"]
    )
    parser.add_argument("--graphs", nargs="+", choices=["split", "direct"], default=["split"])
    parser.add_argument("--lm-eval-limit", type=int, default=8)
    parser.add_argument("--port", type=int, default=8400)
    parser.add_argument("--server-bin", type=Path, default=REPO / ".venv" / "bin", help="l2ray's virtualenv")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
