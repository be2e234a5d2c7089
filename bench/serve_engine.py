"""Engines behind the serve graph: tokens/s and p50/p99 latency at 1, 8 and 32 concurrent clients.

Targets, one after another on the same machine and student:
  (a) bare vLLM           — vLLM's own OpenAI server (the baseline: every ratio is against it);
  (b) graph on vLLM       — our Ingress → Controller → Generator with ``engine: vllm``, intervention
                            off and on (boost zh + a thinking budget);
  (c) graph on transformers — the same graph with ``engine: transformers`` (static batches).
Prompt and answer lengths are mixed (short and long questions; ``max_tokens`` cycles 8/32/96), so a
static batch waits for its longest row while continuous batching does not.

    .venv/bin/python bench/serve_engine.py                             # builtin tiny student, CPU
    .venv/bin/python bench/serve_engine.py --requests 16 --clients 1 8 32
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")

QUESTIONS = [
    "What is 17 * 23?",
    "Solve x^2 - 5x + 6 = 0 and explain every step of the factorisation, then check both roots.",
    "Combien font 12 fois 12 ?",
    "一个三角形的内角和是多少？请一步一步地解释，并给出一个例子来验证你的答案。",
]
ANSWER_LENGTHS = [8, 32, 96]
INTERVENTION = {"boost": ["zh"], "beta": 5.0, "max_thinking_tokens": 48}
ENGINE = {"dtype": "float32", "enforce_eager": True, "max_num_seqs": 64}


def main() -> None:
    args = _parse()
    model = args.model or _tiny_student()
    results: dict[str, dict[int, dict[str, float]]] = {}
    with _bare_vllm(model, args.port) as url:
        results["(a) bare vLLM"] = measure(url, args, None)
    import ray
    from ray import serve

    ray.init(
        address="local", num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False
    )
    # One Serve instance and port for both graphs, the second replacing the first (a serve.start
    # after serve.shutdown in the same driver once lost its proxy).
    serve.start(http_options={"host": "127.0.0.1", "port": args.port + 1})
    url = f"http://127.0.0.1:{args.port + 1}/v1"
    try:
        _graph(model, "vllm", "bench-vllm", url)
        results["(b) graph/vLLM, off"] = measure(url, args, None)
        results["(b) graph/vLLM, on"] = measure(url, args, INTERVENTION)
        serve.delete("bench-vllm")
        _graph(model, "transformers", "bench-transformers", url)
        results["(c) graph/transformers, on"] = measure(url, args, INTERVENTION)
    finally:
        serve.shutdown()
        ray.shutdown()
    report(results, args.clients)


def measure(url: str, args: argparse.Namespace, l2ray: dict | None) -> dict[int, dict[str, float]]:
    """Per client count: completion tokens/s, p50 and p99 latency (s), errors (printed as measured)."""
    rows = {}
    for clients in args.clients:
        rows[clients] = asyncio.run(_load(url, clients, args.requests, l2ray))
        print(f"  {url} l2ray={'on' if l2ray else 'off'} clients={clients}: {rows[clients]}", flush=True)
    return rows


def report(results: dict[str, dict[int, dict[str, float]]], client_counts: list[int]) -> None:
    """One row per target and client count; ratios against (a) measured in this run."""
    baseline = results["(a) bare vLLM"]
    print(f"\n{'target':30} {'clients':>7} {'tok/s':>9} {'p50 s':>8} {'p99 s':>8} {'err':>4} {'×(a)':>6}")
    for name, by_clients in results.items():
        for clients in client_counts:
            row = by_clients[clients]
            ratio = row["tok_s"] / baseline[clients]["tok_s"] if baseline[clients]["tok_s"] else float("nan")
            print(
                f"{name:30} {clients:7d} {row['tok_s']:9.1f} {row['p50']:8.3f} {row['p99']:8.3f} "
                f"{int(row['errors']):4d} {ratio:6.2f}"
            )
    on, hf = results["(b) graph/vLLM, on"], results["(c) graph/transformers, on"]
    for clients in client_counts:
        if hf[clients]["tok_s"]:
            print(f"(b, on) / (c) at {clients} clients: {on[clients]['tok_s'] / hf[clients]['tok_s']:.2f}×")


async def _load(url: str, clients: int, requests: int, l2ray: dict | None) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    tokens = errors = 0
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:

        async def client(index: int) -> None:
            nonlocal tokens, errors
            for turn in range(max(1, requests // clients)):
                n = index + turn * clients
                body = {
                    "model": "l2ray",
                    "messages": [{"role": "user", "content": QUESTIONS[n % len(QUESTIONS)]}],
                    "max_tokens": ANSWER_LENGTHS[n % len(ANSWER_LENGTHS)],
                    "temperature": 0.0,
                }
                if l2ray:
                    body["l2ray"] = l2ray
                start = time.perf_counter()
                response = await http.post("/chat/completions", json=body)
                if response.status_code != 200:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - start)
                tokens += response.json()["usage"]["completion_tokens"]

        start = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        wall = time.perf_counter() - start
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))] if latencies else 0.0
    median = statistics.median(latencies) if latencies else 0.0
    return {"tok_s": tokens / wall, "p50": median, "p99": p99, "errors": errors}


class _bare_vllm:
    """vLLM's OpenAI server as a subprocess (its own process group), up until the block ends."""

    def __init__(self, model: str, port: int) -> None:
        self.command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
            "--served-model-name", "l2ray", "--dtype", ENGINE["dtype"], "--enforce-eager",
            "--max-num-seqs", str(ENGINE["max_num_seqs"]), "--port", str(port), "--host", "127.0.0.1",
        ]  # fmt: skip
        self.url = f"http://127.0.0.1:{port}/v1"

    def __enter__(self) -> str:
        self.process = subprocess.Popen(self.command, start_new_session=True, stdout=subprocess.DEVNULL)
        _wait_ready(self.url.removesuffix("/v1") + "/health", self.process)
        return self.url

    def __exit__(self, *exc) -> None:
        os.killpg(self.process.pid, 15)
        self.process.wait(timeout=120)


def _wait_ready(url: str, process: subprocess.Popen | None = None, limit_s: float = 900) -> None:
    import httpx

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode} before it was ready")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise SystemExit(f"{url} not ready after {limit_s:.0f} s")


def _graph(model: str, engine: str, name: str, url: str) -> None:
    from ray import serve

    from l2ray.serve.app import build_app

    args = {
        "model": model, "engine": engine, "vllm": ENGINE, "device": "cpu", "num_cpus": 0.5,
        "router_num_cpus": 0.1, "api_keys_env": None, "max_concurrency_per_key": 64, "max_batch_size": 32,
    }  # fmt: skip
    serve.run(build_app(args), name=name, route_prefix="/")
    _wait_ready(url.removesuffix("/v1") + "/healthz")


def _tiny_student() -> str:
    from l2ray.student.build import build_student

    return str(build_student(os.path.join(tempfile.mkdtemp(prefix="l2ray-bench-"), "tiny")))


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="a student folder (default: build the tiny student)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=64, help="requests per client count")
    parser.add_argument("--port", type=int, default=8300)
    return parser.parse_args()


if __name__ == "__main__":
    main()
