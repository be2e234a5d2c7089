"""Load test of the serve graph: N concurrent clients for a fixed time (default 60 s).

Starts the graph on a local Ray cluster with serve_config.yaml's per-key limit (or targets ``--url``,
loopback only), alternates plain and streaming chat requests with the intervention on, and counts
errors (target: 0), requests, tokens/s and latency percentiles. By default there are as many clients
as that limit lets one key have in flight; a 429 is retried as a real client would (after
``Retry-After`` when the server sends one, else exponential back-off with jitter) and counted apart.

    .venv/bin/python bench/serve_load.py                          # builtin tiny student, CPU
    .venv/bin/python bench/serve_load.py --device cuda --model /path/to/student
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import yaml

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
SERVE_CONFIG = Path(__file__).resolve().parents[1] / "serve_config.yaml"
BACKOFF_S = (0.05, 2.0)  # first and largest wait before retrying a 429 without Retry-After


def shipped_key_limit() -> int:
    """``max_concurrency_per_key`` of the shipped serve_config.yaml: what one key may have in flight."""
    args = yaml.safe_load(SERVE_CONFIG.read_text())["applications"][0]["args"]
    return int(args["max_concurrency_per_key"])


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
    print(
        f"requests ok: {len(latencies)}   errors: {sum(stats['errors'].values())}  {dict(stats['errors'])}"
        f"   429s retried: {stats['throttled']}"
    )
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
    tokens = throttled = 0
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout, limits=limits, headers=headers) as http:
        deadline = time.perf_counter() + args.duration

        async def client(index: int) -> None:
            nonlocal tokens, throttled
            sent = 0
            while time.perf_counter() < deadline:
                stream = (index + sent) % 2 == 1
                body = _body(index, sent, stream, args.max_tokens)
                sent += 1
                t0 = time.perf_counter()
                attempt = 0
                while True:
                    try:
                        used = await (_streamed(http, body) if stream else _plain(http, body))
                    except Throttled as exc:  # the server asked to slow down: wait, then retry
                        throttled += 1
                        await asyncio.sleep(exc.retry_after or _backoff(attempt))
                        attempt += 1
                        if time.perf_counter() >= deadline:
                            return
                        continue
                    except Exception as exc:  # every failure is counted, none stops the run
                        errors[type(exc).__name__ if not isinstance(exc, BadResponse) else str(exc)] += 1
                        break
                    tokens += used
                    latencies.append(time.perf_counter() - t0)
                    break

        start = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(args.clients)))
        wall = time.perf_counter() - start
    return {"errors": errors, "latencies": latencies, "tokens": tokens, "wall": wall, "throttled": throttled}


def _body(index: int, sent: int, stream: bool, max_tokens: int) -> dict:
    return {
        "model": "l2ray",
        "messages": [{"role": "user", "content": QUESTIONS[(index + sent) % len(QUESTIONS)]}],
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "seed": index * 1000 + sent,
        "stream": stream,
        "l2ray": {"boost": ["zh"], "max_thinking_tokens": max_tokens // 2},
    }


def _backoff(attempt: int) -> float:
    """Exponential back-off with full jitter: clients throttled together do not retry together."""
    first, largest = BACKOFF_S
    return random.uniform(0, min(largest, first * 2**attempt))


class BadResponse(Exception):
    """A response that is not a well-formed success."""


class Throttled(Exception):
    """A 429: the server's per-key limit; ``retry_after`` seconds when it said how long to wait."""

    def __init__(self, retry_after: float | None) -> None:
        super().__init__("HTTP 429")
        self.retry_after = retry_after


def _check_status(response) -> None:
    if response.status_code == 429:
        header = response.headers.get("retry-after")
        raise Throttled(float(header) if header and header.replace(".", "", 1).isdigit() else None)
    if response.status_code != 200:
        raise BadResponse(f"HTTP {response.status_code}")


async def _plain(http, body: dict) -> int:
    response = await http.post("/chat/completions", json=body)
    _check_status(response)
    payload = response.json()
    if not payload["choices"] or "thinking_tokens" not in payload["usage"]:
        raise BadResponse("malformed body")
    return payload["usage"]["completion_tokens"]


async def _streamed(http, body: dict) -> int:
    used, done = None, False
    async with http.stream("POST", "/chat/completions", json=body) as response:
        _check_status(response)
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

    from l2ray.recipe import recipe_from_dict
    from l2ray.serve.api import run_server

    ray.init(
        address="local", num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False
    )
    recipe = recipe_from_dict(
        {
            "name": "bench",
            "serve": {"num_cpus": 0.5, "api_keys_env": None, "max_concurrency_per_key": shipped_key_limit()},
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
    parser.add_argument(
        "--clients", type=int, default=shipped_key_limit(), help="default: serve_config.yaml's per-key limit"
    )
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
