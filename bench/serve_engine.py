"""Engines behind the serve graph: tokens/s and p50/p99 latency at 1, 8 and 32 concurrent clients.

Five targets on the same machine and student, all up at once and measured in interleaved rounds
(each round takes every target at every client count, the target order rotating), so a change in
the machine's load hits them alike; the report gives each figure's median over the rounds:
  (a) bare vLLM           — vLLM's own OpenAI HTTP server (``vllm.entrypoints.openai.api_server``,
                            a subprocess): the baseline every ratio is against;
  (b) graph on vLLM       — our Ingress (with the reasoning controller) → Generator with
                            ``engine: vllm`` (`AsyncLLM` in the replica), intervention off and on
                            (boost zh + a thinking budget);
  (c) graph on transformers — the same graph with ``engine: transformers`` (static batches);
  (d) Ray Serve LLM       — Ray's own ``ray.serve.llm.build_openai_app`` on the same vLLM settings
                            (proxy → OpenAiIngress → LLMServer): what a Ray user would deploy instead;
  (e) direct graph on vLLM — ``graph: direct``: the vLLM Generator inside the Ingress replica (proxy →
                            Ingress ⊃ AsyncLLM), intervention on.
Prompt and answer lengths are mixed (short and long questions; ``max_tokens`` cycles 8/32/96), so a
static batch waits for its longest row while continuous batching does not. Where the cores go is
measured too (Linux ``/proc``): per target at the largest client count, the CPU of each process
group (vLLM's worker and engine core, vLLM's API server, the Serve proxy and each replica, the
client) while that target was loaded, in % of one core.

    .venv/bin/python bench/serve_engine.py                              # builtin tiny student, CPU
    .venv/bin/python bench/serve_engine.py --rounds 5 --requests 64 --clients 1 8 32
    .venv/bin/python bench/serve_engine.py --student-size smollm2           # real weights, 49k vocabulary
    python bench/serve_engine.py --student-size qwen2.5-0.5b --device cuda   # on a GPU machine
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
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from students import SIZES, build_student_of_size  # noqa: E402  (bench/ is on sys.path)

QUESTIONS = [
    "What is 17 * 23?",
    "Solve x^2 - 5x + 6 = 0 and explain every step of the factorisation, then check both roots.",
    "Combien font 12 fois 12 ?",
    "一个三角形的内角和是多少？请一步一步地解释，并给出一个例子来验证你的答案。",
]
ANSWER_LENGTHS = [8, 32, 96]
INTERVENTION = {"boost": ["zh"], "beta": 5.0, "max_thinking_tokens": 48}
BASELINE = "(a) bare vLLM"
SERVE_LLM = "(d) Ray Serve LLM"
DIRECT = "(e) direct graph/vLLM, on"
BARE_SERVER = "vllm.entrypoints.openai.api_server"
"""What the bare server's command line holds (its processes are told from the graph's by it)."""
GROUPS = [
    (BARE_SERVER, "API server"),
    ("VLLM::Worker", "vLLM worker"),
    ("VLLM::EngineCore", "engine core"),
    ("ray::ProxyActor", "Serve proxy"),
    (":OpenAiIngress", "Serve LLM ingress"),
    (":LLMServer", "Serve LLM server"),
    ("bench-vllm-direct:Ingress", "direct ingress + engine front"),
    (":Ingress", "ingress"),
    (":Generator", "generator replica"),
]
"""Command-line markers of the process groups `CpuMeter` reports, first match wins."""
SETTLE_S = 2.0
"""Pause before each measurement: an idle vLLM worker busy-polls for 1 s after its last step (vLLM's
``SpinCondition``), and the last target's engine would take cores from the next one."""


def main() -> None:
    args = _parse()
    model = args.model or build_student_of_size(args.student_size, Path(tempfile.mkdtemp()) / "student")
    engine = _engine_settings(args)
    import ray
    from ray import serve

    with _bare_vllm(model, args.port, engine) as bare_url:
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": args.port + 1})
        try:
            graph = {kind: _graph(model, kind, args, engine) for kind in ("vllm", "transformers")}
            targets = {
                BASELINE: (bare_url, None),
                "(b) graph/vLLM, off": (graph["vllm"], None),
                "(b) graph/vLLM, on": (graph["vllm"], INTERVENTION),
                "(c) graph/transformers, on": (graph["transformers"], INTERVENTION),
                DIRECT: (_graph(model, "vllm", args, engine, shape="direct"), INTERVENTION),
            }
            if not args.skip_serve_llm:
                targets[SERVE_LLM] = (_serve_llm(model, args, engine), None)
            rounds = measure_rounds(targets, args)
        finally:
            serve.shutdown()
            ray.shutdown()
    report(rounds, args.clients)


def measure_rounds(
    targets: dict[str, tuple[str, dict | None]], args: argparse.Namespace
) -> list[dict[str, dict[int, dict[str, float]]]]:
    """``args.rounds`` rounds; in each, every target at every client count (order rotated per round)."""
    names = list(targets)
    rounds = []
    for index in range(args.rounds):
        order = names[index % len(names) :] + names[: index % len(names)]
        measured: dict[str, dict[int, dict[str, float]]] = {name: {} for name in names}
        for clients in args.clients:
            for name in order:
                url, l2ray = targets[name]
                time.sleep(SETTLE_S)
                with CpuMeter() as cpu:
                    row = asyncio.run(_load(url, clients, args.requests, l2ray))
                row["cpu"] = cpu.shares
                measured[name][clients] = row
                print(f"  round {index + 1} {name} clients={clients}: {_row_text(row)}", flush=True)
        rounds.append(measured)
    return rounds


def report(rounds: list[dict[str, dict[int, dict[str, float]]]], client_counts: list[int]) -> None:
    """Medians over rounds per target and client count; ratios against (a) per round, then their median
    (with the smallest and largest round)."""
    print(f"\nmedians over {len(rounds)} rounds")
    header = f"{'target':28} {'clients':>7} {'tok/s':>8} {'p50 s':>7} {'p99 s':>7} {'err':>4}"
    print(f"{header} {'×(a) [min–max]':>18}")
    for name in rounds[0]:
        for clients in client_counts:
            rows = [r[name][clients] for r in rounds]
            ratios = _ratios(rounds, name, BASELINE, clients)
            errors = int(sum(r["errors"] for r in rows))
            print(
                f"{name:28} {clients:7d} {_median(rows, 'tok_s'):8.1f} {_median(rows, 'p50'):7.3f} "
                f"{_median(rows, 'p99'):7.3f} {errors:4d} {_ratio_text(ratios):>18}"
            )
    for clients in client_counts:
        ratios = _ratios(rounds, "(b) graph/vLLM, on", "(c) graph/transformers, on", clients)
        print(f"(b, on) / (c) at {clients} clients: {_ratio_text(ratios)}")
    for clients in client_counts if SERVE_LLM in rounds[0] else []:
        for name in (DIRECT, "(b) graph/vLLM, on", "(b) graph/vLLM, off"):
            ratios = _ratios(rounds, name, SERVE_LLM, clients)
            print(f"{name[4:]} / (d) Ray Serve LLM at {clients} clients: {_ratio_text(ratios)}")
    most = max(client_counts)
    print(f"\nwhere the cores go at {most} clients (% of one core, median over rounds)")
    for name in rounds[0]:
        groups = sorted({g for r in rounds for g in r[name][most]["cpu"]})
        shares = {g: statistics.median(r[name][most]["cpu"].get(g, 0.0) for r in rounds) for g in groups}
        ranked = sorted(shares.items(), key=lambda kv: -kv[1])
        print(f"{name:28} " + ", ".join(f"{g} {v:.0f}" for g, v in ranked if v >= 1))


class CpuMeter:
    """CPU time of each process group while the block runs, from ``/proc`` (Linux; empty elsewhere):
    ``shares`` maps a group to its % of one core. Processes alive at the end are counted (the
    engines, replicas and servers live through a measurement; a short-lived child's time is lost).
    The bare server's processes are told from the graph's by ancestry (the bench starts the bare
    server; Ray starts the graph's)."""

    def __enter__(self) -> CpuMeter:
        self.shares: dict[str, float] = {}
        self._start, self._t0 = _cpu_ticks(), time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        end, seconds = _cpu_ticks(), time.monotonic() - self._t0
        tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        for pid, (ticks, group) in end.items():
            used = ticks - self._start.get(pid, (0, group))[0]
            if used > 0:
                self.shares[group] = self.shares.get(group, 0.0) + 100 * used / tick / seconds


async def _load(url: str, clients: int, requests: int, l2ray: dict | None) -> dict[str, float]:
    """``requests`` chat requests from ``clients`` concurrent clients: completion tokens/s over the
    wall time, p50/p99 latency, errors."""
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


def _cpu_ticks() -> dict[int, tuple[int, str]]:
    """pid → (user + system clock ticks, process group) for every readable process."""
    stats: dict[int, tuple[int, int, str]] = {}
    for entry in Path("/proc").glob("[0-9]*") if Path("/proc/self/stat").exists() else []:
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]), command)
    bare = {pid for pid, (_, _, command) in stats.items() if BARE_SERVER in command}
    return {pid: (ticks, _group(pid, command, stats, bare)) for pid, (_, ticks, command) in stats.items()}


def _group(pid: int, command: str, stats: dict[int, tuple[int, int, str]], bare: set[int]) -> str:
    ancestor, seen = pid, 0
    while ancestor in stats and ancestor not in bare and seen < 32:
        ancestor, seen = stats[ancestor][0], seen + 1
    owner = "bare " if ancestor in bare else ""
    for marker, name in GROUPS:
        if marker in command:
            return owner + name
    return "client" if pid == os.getpid() else "other"


class _bare_vllm:
    """vLLM's OpenAI server as a subprocess (its own process group), up until the block ends."""

    def __init__(self, model: str, port: int, engine: dict) -> None:
        self.command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
            "--served-model-name", "l2ray", "--dtype", engine["dtype"], "--max-num-seqs",
            str(engine["max_num_seqs"]), "--port", str(port), "--host", "127.0.0.1",
            "--gpu-memory-utilization", str(engine["gpu_memory_utilization"]),
            *(["--enforce-eager"] if engine["enforce_eager"] else []),
        ]  # fmt: skip
        self.url = f"http://127.0.0.1:{port}/v1"

    def __enter__(self) -> str:
        self.process = subprocess.Popen(self.command, start_new_session=True, stdout=subprocess.DEVNULL)
        _wait_ready(self.url.removesuffix("/v1") + "/health", self.process)
        return self.url

    def __exit__(self, *exc) -> None:
        os.killpg(self.process.pid, 15)
        self.process.wait(timeout=120)


def _graph(model: str, engine: str, args: argparse.Namespace, settings: dict, shape: str = "split") -> str:
    """Deploy the graph (``shape``: split or direct) on ``engine`` under its own route prefix; return its
    ``/v1`` URL."""
    from ray import serve

    from l2ray.serve.app import build_app

    gpus = 0.3 if args.device == "cuda" else 0.0  # three engines share one GPU
    # Reservations, not limits (Ray pins no cores): small enough that every target schedules on 2 CPUs.
    app_args = {
        "model": model, "engine": engine, "vllm": settings, "device": args.device, "num_cpus": 0.25,
        "num_gpus": gpus, "router_num_cpus": 0.1, "api_keys_env": None, "max_concurrency_per_key": 64,
        "max_batch_size": 32, "graph": shape,
    }  # fmt: skip
    prefix = f"/{engine}" if shape == "split" else f"/{engine}-{shape}"
    serve.run(build_app(app_args), name=f"bench{prefix.replace('/', '-')}", route_prefix=prefix)
    base = f"http://127.0.0.1:{args.port + 1}{prefix}"
    _wait_ready(f"{base}/readyz")  # 200 once a Generator replica has produced a token
    return f"{base}/v1"


def _serve_llm(model: str, args: argparse.Namespace, settings: dict) -> str:
    """Deploy Ray Serve LLM's OpenAI app on the same engine settings under ``/rayllm``; its ``/v1`` URL.

    On CPU its accelerator is told (else it asks for a GPU), and its replica's placement group (the
    replica's own CPUs plus the engine's bundle; two CPUs by default, which never schedule beside the
    other targets on 2 cores) holds 0.5 CPU (a reservation: Ray pins no cores)."""
    from ray import serve
    from ray.serve.llm import LLMConfig, build_openai_app

    cpu = args.device == "cpu"
    config = LLMConfig(
        model_loading_config={"model_id": "l2ray", "model_source": model},
        engine_kwargs=dict(settings),
        accelerator_config={"kind": "cpu"} if cpu else None,
        # On a GPU the engines share it (a third each, as _graph's); not run here.
        placement_group_config={"bundles": [{"CPU": 0.5} if cpu else {"CPU": 0.5, "GPU": 0.3}]},
        deployment_config={"num_replicas": 1, "ray_actor_options": {"num_cpus": 0}},
    )
    ingress = {"ray_actor_options": {"num_cpus": 0}}  # 2 cores: the targets share what is left
    app = build_openai_app({"llm_configs": [config], "ingress_deployment_config": ingress})
    serve.run(app, name="bench-serve-llm", route_prefix="/rayllm")
    base = f"http://127.0.0.1:{args.port + 1}/rayllm"
    _wait_ready(f"{base}/v1/models")
    return f"{base}/v1"


def _engine_settings(args: argparse.Namespace) -> dict:
    """vLLM settings for (a) and (b): fp32 eager on CPU (parity, fast start); bf16 compiled on GPU, each
    of the two vLLM engines with a third of the memory."""
    common = {"max_num_seqs": 64}
    if args.device == "cuda":
        return {**common, "dtype": "bfloat16", "enforce_eager": False, "gpu_memory_utilization": 0.3}
    return {**common, "dtype": "float32", "enforce_eager": True, "gpu_memory_utilization": 0.9}


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


def _ratios(rounds: list[dict], name: str, baseline: str, clients: int) -> list[float]:
    return [
        r[name][clients]["tok_s"] / r[baseline][clients]["tok_s"]
        for r in rounds
        if r[baseline][clients]["tok_s"]
    ]


def _ratio_text(ratios: list[float]) -> str:
    if not ratios:
        return "n/a"
    return f"{statistics.median(ratios):.2f} [{min(ratios):.2f}–{max(ratios):.2f}]"


def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def _row_text(row: dict[str, float]) -> str:
    latency = f"p50 {row['p50']:.3f} s, p99 {row['p99']:.3f} s"
    return f"{row['tok_s']:.1f} tok/s, {latency}, {int(row['errors'])} errors"


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="a student folder (default: --student-size)")
    parser.add_argument("--student-size", choices=SIZES, default="tiny")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=64, help="per target, client count and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=8300)
    parser.add_argument("--skip-serve-llm", action="store_true", help="leave (d) Ray Serve LLM out")
    return parser.parse_args()


if __name__ == "__main__":
    main()
