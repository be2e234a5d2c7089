"""Synthesis throughput against a local teacher with a fixed latency: l2ray vs the teacher-bound ideal.

Starts ``tests/fake_teacher.py`` as a separate process (fixed latency, no faults), then measures
in one run, with the same total concurrency:

- ideal: ``N * latency / concurrency`` (the teacher is the only cost);
- a plain asyncio + aiohttp loop sending the same N requests;
- l2ray: ``synthesize()`` end to end on Ray Data (mixed traces whose fragment translations are the N
  requests; actors x teacher.concurrency = concurrency), including actor start-up, verification and
  Parquet writing;
- l2ray again on a fresh run folder sharing the response cache (every request a cache hit): the
  fixed cost of a run; fresh minus cached estimates the teacher-bound part of the fresh run.

Usage:
    python bench/synth_throughput.py --requests 8192 --concurrency 64 --latency 0.1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FRAGMENTS_PER_SEED = 33  # 32 translated fragments a seed (the first stays English)
LANGUAGES = ["zh", "ja", "fr", "de"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8192, help="N (at least 2000)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.1, help="server latency per request, seconds")
    parser.add_argument("--actors", type=int, default=2)
    args = parser.parse_args()
    seeds = max(1, args.requests // (FRAGMENTS_PER_SEED - 1))
    n = seeds * (FRAGMENTS_PER_SEED - 1)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    server, base_url = _start_server(args.latency)
    try:
        work = Path(tempfile.mkdtemp(prefix="l2ray-bench-"))
        seeds_path = _write_seeds(work / "seeds.jsonl", seeds)
        ideal = n * args.latency / args.concurrency
        plain = asyncio.run(_plain_loop(base_url, seeds_path, args.concurrency))
        # Printed now: a later failure (Ray start-up on an overloaded machine) still leaves the baseline.
        print(f"plain aiohttp: {plain:.2f} s, ratio {ideal / plain:.3f}", file=sys.stderr, flush=True)
        fresh, fresh_summary = _l2ray(work, "fresh", seeds_path, base_url, args)
        cached, cached_summary = _l2ray(work, "cached", seeds_path, base_url, args)
    finally:
        server.terminate()
        server.wait()
    assert fresh_summary["this_run"]["requests_sent"] == n, fresh_summary["this_run"]
    assert cached_summary["this_run"]["cache_hits"] == n, cached_summary["this_run"]
    report = {
        "requests": n,
        "concurrency": args.concurrency,
        "latency_s": args.latency,
        "actors": args.actors,
        "ideal_s": round(ideal, 2),
        "plain_aiohttp_s": round(plain, 2),
        "l2ray_s": round(fresh, 2),
        "l2ray_cache_hits_s": round(cached, 2),
        "ratio_plain_aiohttp": round(ideal / plain, 3),
        "ratio_l2ray": round(ideal / fresh, 3),
        # The cache-hit run pays everything but the teacher (Ray Data and actor start-up, verification,
        # Parquet): fresh minus cached estimates the teacher-bound part of the fresh run.
        "l2ray_teacher_part_s": round(fresh - cached, 2),
        "ratio_l2ray_teacher_part": round(ideal / max(fresh - cached, 1e-9), 3),
        "l2ray_rows": fresh_summary["rows"],
        "l2ray_rejected": fresh_summary["rejected"],
    }
    print(json.dumps(report, indent=2))


def _start_server(latency: float) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        [sys.executable, str(REPO / "tests/fake_teacher.py"), "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    return server, server.stdout.readline().strip()


def _write_seeds(path: Path, count: int) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(count):
            steps = [f"We start problem {i} by naming the unknown value $x_{{{i}}}$. "]
            steps += [
                f"Wait, step {k} of problem {i} gives the value $x_{{{i}}} + {k} = {i + k}$ here. "
                for k in range(1, FRAGMENTS_PER_SEED)
            ]
            record = {
                "id": f"b{i}",
                "question": f"Problem {i}: find $x$.",
                "cot": "".join(steps),
                "answer": "0",
            }
            fh.write(json.dumps(record) + "\n")
    return path


async def _plain_loop(base_url: str, seeds_path: Path, concurrency: int) -> float:
    """The same fragment-translation requests, straight from one aiohttp session."""
    import aiohttp

    from l2ray.data.seeds import load_seeds
    from l2ray.recipe import SeedsConfig
    from l2ray.synth.prompts import translate_fragment_messages
    from l2ray.text import segment

    bodies = [
        {
            "model": "bench",
            "messages": translate_fragment_messages(fragment, LANGUAGES[k % 4]),
            "max_tokens": 64,
        }
        for seed in load_seeds(SeedsConfig(source=str(seeds_path))).rows
        for k, fragment in enumerate(segment(seed.cot)[1:])
    ]
    semaphore = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(body: dict) -> str:
            async with semaphore, session.post(f"{base_url}/chat/completions", json=body) as resp:
                data = await resp.json()
                return data["choices"][0]["message"]["content"]

        started = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - started


def _l2ray(
    work: Path, name: str, seeds_path: Path, base_url: str, args: argparse.Namespace
) -> tuple[float, dict]:
    import ray

    from l2ray.recipe import recipe_from_dict
    from l2ray.synth.api import synthesize

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    recipe = recipe_from_dict(
        {
            "name": name,
            "output_dir": str(work / "runs"),
            "languages": LANGUAGES,
            "seeds": {"source": str(seeds_path)},
            "teacher": {
                "base_url": base_url,
                "api_key_env": None,  # the local server takes no key
                "model": "bench",
                "max_tokens": 64,
                "concurrency": args.concurrency // args.actors,
                "cache_dir": str(work / "cache"),
            },
            "synth": {
                "kinds": ["mixed"],
                "p_switch": 1.0,
                "actors": args.actors,
                "batch_size": 8,
                "progress": False,
            },
        }
    )
    started = time.perf_counter()
    result = synthesize(recipe)
    return time.perf_counter() - started, result.summary


if __name__ == "__main__":
    main()
