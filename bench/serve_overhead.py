"""What serving costs on top of plain ``generate``: one run, one ~30M-parameter student.

Phases (same prompts, fixed output length so tokens/s compare):
  1. plain in-process ``model.generate`` (greedy, batch 1);
  2. the Generator's decode engine in-process, intervention off;
  3. the same with the intervention on (tag boost/suppress, max_switches, thinking budget);
  4. the full HTTP graph (Ingress → Controller → Generator) with 1 client, then 8 concurrent clients.
Prints tokens/s, p50/p99 latency per request and the ratios to phase 1.

    .venv/bin/python bench/serve_overhead.py                 # CPU
    .venv/bin/python bench/serve_overhead.py --device cuda   # GPU
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

QUESTIONS = [
    "What is 17 * 23?",
    "Solve x^2 - 5x + 6 = 0.",
    "How many primes are below 30?",
    "Combien font 12 fois 12 ?",
    "Was ist die Summe der ersten 10 Zahlen?",
    "一个三角形的内角和是多少？",
    "What is the derivative of x^3?",
    "If 3x + 2 = 11, what is x?",
]
INTERVENTION = {
    "boost": ["zh"],
    "suppress": ["en"],
    "beta": 5.0,
    "max_switches": 3,
    "max_thinking_tokens": 10_000,
}


def main() -> None:
    args = _parse()
    import torch

    from l2ray.recipe import StudentConfig
    from l2ray.student.build import build_student
    from l2ray.student.resolve import load_student

    if args.threads:
        torch.set_num_threads(args.threads)
    shape = StudentConfig(
        hidden_size=args.hidden_size,
        intermediate_size=args.hidden_size * 3,
        num_hidden_layers=args.layers,
        num_attention_heads=8,
        num_key_value_heads=4,
    )
    path = build_student(Path(args.workdir) / f"student-{args.hidden_size}x{args.layers}", shape)
    model, tokenizer = load_student(str(path), device=args.device)
    params = sum(p.numel() for p in model.parameters())
    print(f"student {path}: {params / 1e6:.1f}M parameters on {args.device}")
    print(f"{args.max_tokens} tokens per request; HTTP phases run with the intervention on")

    results: dict[str, Phase] = {}
    results["generate"] = bench_generate(model, tokenizer, args)
    results["engine, off"] = bench_engine(model, tokenizer, args, intervention=False)
    results["engine, on"] = bench_engine(model, tokenizer, args, intervention=True)
    del model
    url = start_graph(str(path), args)
    for clients in (1, 8):
        results[f"HTTP, {clients} client(s)"] = bench_http(url, args, clients)
    from ray import serve

    serve.shutdown()
    base = results["generate"].tokens_per_s
    print(f"\n{'phase':<22}{'tok/s':>9}{'p50 s':>9}{'p99 s':>9}{'vs generate':>13}")
    for name, phase in results.items():
        ratio = phase.tokens_per_s / base
        print(f"{name:<22}{phase.tokens_per_s:>9.1f}{phase.p50:>9.3f}{phase.p99:>9.3f}{ratio:>12.2f}x")


class Phase:
    """Tokens and per-request latencies of one phase."""

    def __init__(self, tokens: int, wall_s: float, latencies: list[float]) -> None:
        self.tokens_per_s = tokens / wall_s
        ordered = sorted(latencies)
        self.p50 = statistics.median(ordered)
        self.p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def bench_generate(model, tokenizer, args) -> Phase:
    import torch

    prompts = [_prompt_ids(tokenizer, q) for q in _questions(args)]
    latencies, tokens = [], 0
    start = time.perf_counter()
    for index, ids in enumerate([prompts[0], *prompts]):  # the first one warms up, untimed
        if index == 1:
            latencies, tokens, start = [], 0, time.perf_counter()
        t0 = time.perf_counter()
        x = torch.tensor([ids], device=model.device)
        with torch.inference_mode():
            out = model.generate(
                input_ids=x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=args.max_tokens,
                min_new_tokens=args.max_tokens,
                do_sample=False,
            )
        tokens += out.shape[1] - x.shape[1]
        latencies.append(time.perf_counter() - t0)
    return Phase(tokens, time.perf_counter() - start, latencies)


def bench_engine(model, tokenizer, args, intervention: bool) -> Phase:
    from l2ray.decode.engine import DecodeEngine
    from l2ray.decode.types import DecodeRequest
    from l2ray.recipe import InterventionConfig

    engine = DecodeEngine(model, tokenizer)
    config = InterventionConfig(**INTERVENTION) if intervention else InterventionConfig()
    latencies, tokens = [], 0
    start = time.perf_counter()
    questions = _questions(args)
    for index, question in enumerate([questions[0], *questions]):  # the first one warms up, untimed
        if index == 1:
            latencies, tokens, start = [], 0, time.perf_counter()
        request = DecodeRequest(_prompt_ids(tokenizer, question), args.max_tokens, config, ignore_eos=True)
        t0 = time.perf_counter()
        [events] = engine.run([request])
        tokens += sum(not e.is_stop for e in events)
        latencies.append(time.perf_counter() - t0)
    return Phase(tokens, time.perf_counter() - start, latencies)


def start_graph(model_path: str, args) -> str:
    """A local Ray cluster and the serve graph on it (loopback only); returns the base URL."""
    import ray

    from l2ray.recipe import recipe_from_dict
    from l2ray.serve.api import run_server

    ray.init(
        address="local", num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False
    )
    recipe = recipe_from_dict({"name": "bench", "serve": {"num_cpus": 0.5, "api_keys_env": None}})
    return run_server(
        recipe,
        model_uri=model_path,
        port=args.port,
        device=args.device,
        num_gpus=1.0 if args.device.startswith("cuda") else 0.0,
        max_batch_size=8,
    )


def bench_http(url: str, args, clients: int) -> Phase:
    import httpx

    questions = _questions(args) * (clients if clients > 1 else 1)

    async def run() -> Phase:
        latencies: list[float] = []
        tokens = 0
        queue = list(questions)
        async with httpx.AsyncClient(base_url=url, timeout=600) as http:

            async def client() -> None:
                nonlocal tokens
                while queue:
                    question = queue.pop()
                    t0 = time.perf_counter()
                    response = await http.post(
                        "/completions",
                        json={
                            "model": "l2ray",
                            "prompt": _chat_text(question),
                            "max_tokens": args.max_tokens,
                            "ignore_eos": True,
                            "l2ray": INTERVENTION,
                        },
                    )
                    response.raise_for_status()
                    tokens += response.json()["usage"]["completion_tokens"]
                    latencies.append(time.perf_counter() - t0)

            await http.post("/completions", json={"model": "l2ray", "prompt": "warm", "max_tokens": 2})
            start = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(clients)))
            return Phase(tokens, time.perf_counter() - start, latencies)

    return asyncio.run(run())


def _questions(args) -> list[str]:
    return (QUESTIONS * (args.requests // len(QUESTIONS) + 1))[: args.requests]


def _chat_text(question: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n<think>\n"


def _prompt_ids(tokenizer, question: str) -> list[int]:
    return tokenizer(_chat_text(question), add_special_tokens=False)["input_ids"]


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens generated per request")
    parser.add_argument("--requests", type=int, default=8, help="requests per phase (x clients for HTTP)")
    parser.add_argument("--hidden-size", type=int, default=512)
    parser.add_argument("--layers", type=int, default=9, help="9 layers of 512 ≈ 30M parameters")
    parser.add_argument("--port", type=int, default=18431)
    parser.add_argument("--threads", type=int, default=0, help="torch threads in-process (0: default)")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "l2ray-bench"))
    return parser.parse_args()


if __name__ == "__main__":
    main()
