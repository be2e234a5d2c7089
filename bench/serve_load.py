"""Load test of the serve graph: N concurrent clients (default 32) for a fixed time (default 60 s).

Starts the graph on a local Ray cluster (or targets ``--url``, loopback only), alternates plain and
streaming chat requests with the intervention on, and counts errors (target: 0), requests,
tokens/s and latency percentiles.

    .venv/bin/python bench/serve_load.py                          # builtin tiny student, CPU
    .venv/bin/python bench/serve_load.py --device cuda --model /path/to/student
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections import Counter
from urllib.parse import urlparse

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

QUESTIONS = [
    "What is 17 * 23?",
    "Solve x^2 - 5x + 6 = 0.",
    "Combien font 12 fois 12 ?",
    "一个三角形的内角和是多少？",
]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def main() -> None:
    args = _parse()
    url = args.url or start_graph(args)
    host = urlparse(url).hostname
    if host not in LOOPBACK:
        raise SystemExit(
            f"--url must be a loopback address (got {host!r}); this tool only loads local servers"
        )
    print(
        f"{args.clients} clients for {args.duration:.0f} s against {url}, up to {args.max_tokens} tokens each"
    )
    stats = asyncio.run(load(url, args))
    latencies = sorted(stats["latencies"])
    wall = stats["wall"]
    print(f"requests ok: {len(latencies)}   errors: {sum(stats['errors'].values())}  {dict(stats['errors'])}")
    if latencies:
        p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
        print(f"throughput: {len(latencies) / wall:.2f} req/s, {stats['tokens'] / wall:.1f} completion tok/s")
        print(
            f"latency: p50 {statistics.median(latencies):.3f} s, p99 {p99:.3f} s, max {latencies[-1]:.3f} s"
        )
    if not args.url:
        from ray import serve

        serve.shutdown()
    if sum(stats["errors"].values()):
        raise SystemExit(1)


async def load(url: str, args) -> dict:
    import httpx

    errors: Counter[str] = Counter()
    latencies: list[float] = []
    tokens = 0
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout, limits=limits, headers=headers) as http:
        deadline = time.perf_counter() + args.duration

        async def client(index: int) -> None:
            nonlocal tokens
            sent = 0
            while time.perf_counter() < deadline:
                stream = (index + sent) % 2 == 1
                body = {
                    "model": "l2ray",
                    "messages": [{"role": "user", "content": QUESTIONS[(index + sent) % len(QUESTIONS)]}],
                    "max_tokens": args.max_tokens,
                    "temperature": 0.7,
                    "seed": index * 1000 + sent,
                    "stream": stream,
                    "l2ray": {"boost": ["zh"], "max_thinking_tokens": args.max_tokens // 2},
                }
                sent += 1
                t0 = time.perf_counter()
                try:
                    used = await (_streamed(http, body) if stream else _plain(http, body))
                except Exception as exc:  # every failure is counted, none stops the run
                    errors[type(exc).__name__ if not isinstance(exc, BadResponse) else str(exc)] += 1
                    continue
                tokens += used
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(args.clients)))
        wall = time.perf_counter() - start
    return {"errors": errors, "latencies": latencies, "tokens": tokens, "wall": wall}


class BadResponse(Exception):
    """A response that is not a well-formed success."""


async def _plain(http, body: dict) -> int:
    response = await http.post("/chat/completions", json=body)
    if response.status_code != 200:
        raise BadResponse(f"HTTP {response.status_code}")
    payload = response.json()
    if not payload["choices"] or "thinking_tokens" not in payload["usage"]:
        raise BadResponse("malformed body")
    return payload["usage"]["completion_tokens"]


async def _streamed(http, body: dict) -> int:
    used, done = None, False
    async with http.stream("POST", "/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise BadResponse(f"HTTP {response.status_code}")
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if chunk.get("usage"):
                used = chunk["usage"]["completion_tokens"]
    if not done or used is None:
        raise BadResponse("stream ended without usage or [DONE]")
    return used


def start_graph(args) -> str:
    import ray

    from l2ray.config import recipe_from_dict
    from l2ray.serve.api import run_server

    ray.init(
        address="local", num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False
    )
    recipe = recipe_from_dict(
        {
            "name": "bench",
            "serve": {"num_cpus": 0.5, "api_keys_env": None, "max_concurrency_per_key": args.clients},
        }
    )
    return run_server(
        recipe,
        model_uri=args.model,
        port=args.port,
        device=args.device,
        num_gpus=1.0 if args.device.startswith("cuda") else 0.0,
        max_batch_size=args.batch,
    )


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--model", default="builtin:tiny", help="student URI when starting the graph")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16, help="Generator max_batch_size")
    parser.add_argument("--port", type=int, default=18432)
    parser.add_argument("--url", default=None, help="an already running graph (loopback only), e.g. …/v1")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--timeout", type=float, default=120.0, help="per-request timeout in seconds")
    return parser.parse_args()


if __name__ == "__main__":
    main()
