"""One prepared GPU check: what l2ray has never measured on a GPU, in one command of a few minutes.

Run from the working tree on a machine with one NVIDIA GPU and torch + transformers (5.17 or newer);
it needs neither Ray nor vLLM. Four parts, each under its own time cap; a part that fails prints its
error and the others still run. One table is printed and the figures are written as JSON:

- ``peak``: the bf16 matmul peak (8192³), the unit of MFU;
- ``fsdp2 <shape>``: l2ray's own FSDP2 training step (meta init, bf16 compute / fp32 reduce,
  activation checkpointing, chunked loss, packing: `l2ray.train`), one process (world size 1,
  NCCL), on random-init Qwen2.5-1.5B- and 3B-shaped models at 8k tokens a step: tokens/s, MFU,
  the measured peak memory beside ``l2ray train plan``'s figure for the same shape;
- ``intervention``: the tensor core (`l2ray.decode.core`) as Model Runner V2 drives it, at batch 256
  and vocabulary 151,936, beside one decode step of a Qwen2.5-7B-shaped model at batch 256
  (transformers forward with a KV cache): the ratio the ≤ 3 % target is about;
- ``engine``: the transformers decode engine (`l2ray.decode.engine`) at batch 32 on the 0.5B shape,
  with and without the intervention: tokens/s.

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl   # see `make gpu-wheels`
    PYTHONPATH=/tmp/site:. python3 bench/gpu_check.py --out gpu_check.json
    .venv/bin/python bench/gpu_check.py --smoke        # every part on tiny shapes on CPU (gloo): CI runs this
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# This checkout's l2ray, installed or not, and the sibling benches (`intervention_step`).
sys.path[:0] = [str(REPO), str(REPO / "bench")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from l2ray.train.memory_plan import QWEN25_SHAPES, ModelShape  # noqa: E402

TINY = ModelShape(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=1024, tied=True)


@dataclass(frozen=True)
class Sizes:
    """What each part runs on: the GPU's real shapes, or ``--smoke``'s tiny ones on CPU."""

    device: str
    matmul: int
    dtype: torch.dtype
    train_shapes: dict[str, ModelShape]
    train_tokens: int
    train_steps: int
    decode_shape: ModelShape
    decode_batch: int
    vocab: int
    prompt_tokens: int
    engine_shape: ModelShape
    engine_batch: int
    engine_tokens: int
    caps: dict[str, int]


GPU = Sizes(
    device="cuda",
    matmul=8192,
    dtype=torch.bfloat16,
    train_shapes={"1.5B": QWEN25_SHAPES["1.5B"], "3B": QWEN25_SHAPES["3B"]},
    train_tokens=8192,
    train_steps=6,
    decode_shape=QWEN25_SHAPES["7B"],
    decode_batch=256,
    vocab=151_936,
    prompt_tokens=128,
    engine_shape=QWEN25_SHAPES["0.5B"],
    engine_batch=32,
    engine_tokens=128,
    caps={"peak": 30, "fsdp2": 130, "intervention": 120, "engine": 80},
)
SMOKE = Sizes(
    device="cpu",
    matmul=256,
    dtype=torch.float32,
    train_shapes={"tiny": TINY},
    train_tokens=256,
    train_steps=2,
    decode_shape=TINY,
    decode_batch=8,
    vocab=1024,
    prompt_tokens=16,
    engine_shape=TINY,
    engine_batch=4,
    engine_tokens=8,
    caps={"peak": 60, "fsdp2": 120, "intervention": 120, "engine": 120},
)


class PartTimeout(Exception):
    """A part ran past its cap."""


def main() -> None:
    args = _parse()
    sizes = SMOKE if args.smoke else GPU
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run this on a GPU machine, or with --smoke on CPU")
    results: dict[str, Any] = {"environment": environment(sizes)}
    parts: list[tuple[str, Callable[[], dict[str, Any]], int]] = [
        ("peak", lambda: peak(sizes), sizes.caps["peak"])
    ]
    for name, shape in sizes.train_shapes.items():
        parts.append((f"fsdp2 {name}", lambda s=shape: fsdp2(sizes, s, results), sizes.caps["fsdp2"]))
    parts.append(("intervention", lambda: intervention(sizes), sizes.caps["intervention"]))
    parts.append(("engine", lambda: engine(sizes), sizes.caps["engine"]))
    with process_group(sizes.device):
        for name, run, cap in parts:
            results[name] = run_part(name, run, cap)
    print(table(results))
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"\nwritten: {args.out}")


def run_part(name: str, run: Callable[[], dict[str, Any]], cap: int) -> dict[str, Any]:
    """One part under its cap; its error (with the cause) instead of its figures when it fails."""
    print(f"-- {name} (at most {cap} s)", flush=True)
    start = time.perf_counter()
    try:
        with time_cap(cap):
            figures = run()
    except Exception as exc:  # one part's failure must not cost the others
        traceback.print_exc()
        figures = {"error": f"{type(exc).__name__}: {exc}"}
    figures["seconds"] = round(time.perf_counter() - start, 1)
    _release()
    print(f"   {figures}", flush=True)
    return figures


def peak(sizes: Sizes) -> dict[str, Any]:
    """Matmul TFLOP/s at ``sizes.matmul``³ in the training dtype: the unit of MFU."""
    n = sizes.matmul
    a = torch.randn(n, n, device=sizes.device, dtype=sizes.dtype)
    b = torch.randn(n, n, device=sizes.device, dtype=sizes.dtype)
    seconds = _timed(lambda: a @ b, sizes.device, warmup=3, repeats=10)
    return {"tflops": 2 * n**3 / statistics.median(seconds) / 1e12, "n": n, "dtype": str(sizes.dtype)}


def fsdp2(sizes: Sizes, shape: ModelShape, results: dict[str, Any]) -> dict[str, Any]:
    """l2ray's FSDP2 step on a random-init model of ``shape``: tokens/s, MFU, peak memory vs the plan."""
    from l2ray.recipe import TrainConfig
    from l2ray.train.fsdp import ShardSettings, build_sharded_random
    from l2ray.train.memory_plan import memory_plan

    device = torch.device(sizes.device)
    model = build_sharded_random(qwen2_config(shape), device, ShardSettings(bf16=True, chunk_tokens=2048))
    fused = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), **fused)
    batches, mean_trace = _packed_batches(shape.vocab, sizes.train_tokens, sizes.train_steps + 1, device)
    _reset_peak(device)
    tokens, seconds = _train_steps(model, optimizer, batches, sizes.device)
    throughput = sum(tokens[1:]) / sum(seconds[1:])  # the first step warms up
    flops_per_token = 6 * (shape.layers * shape.layer_params() + shape.vocab * shape.hidden)
    flops_per_token += 12 * shape.layers * shape.hidden * mean_trace  # attention within each trace
    peak_tflops = results.get("peak", {}).get("tflops")
    config = TrainConfig(
        strategy="fsdp2", num_workers=1, batch_size=1, max_seq_len=sizes.train_tokens, loss_chunk_tokens=2048
    )
    plan = memory_plan(shape, config)
    return {
        "parameters_b": shape.params() / 1e9,
        "tokens_per_s": throughput,
        "mfu": flops_per_token * throughput / (peak_tflops * 1e12) if peak_tflops else None,
        "peak_memory_gib": _peak_memory(device) / 2**30,
        "plan_gib": plan.gpu_total / 2**30,
        "plan_without_workspace_gib": (plan.gpu_total - plan.gpu["workspace"]) / 2**30,
        "tokens_per_step": sizes.train_tokens,
    }


def intervention(sizes: Sizes) -> dict[str, Any]:
    """The tensor core's step (and the per-row path's) beside one decode step of a model at that batch."""
    from intervention_step import measure

    timings = {t.path: t for t in measure(sizes.decode_batch, sizes.vocab, sizes.device, steps=30)}
    decode_ms = decode_step_ms(sizes)
    core = timings["core"]
    return {
        "batch": sizes.decode_batch,
        "vocab": sizes.vocab,
        "core_ms": core.ms,
        "core_host_ms": core.host_ms,
        "core_passes": core.passes,
        "core_ops": core.ops,
        "per_row_ms": timings["per-row"].ms,
        "decode_step_ms": decode_ms,
        "core_share_of_decode_step": core.ms / decode_ms,
    }


def decode_step_ms(sizes: Sizes) -> float:
    """One decode step (one token per row, KV cache) of a random-init model of ``sizes.decode_shape``."""
    from transformers import AutoModelForCausalLM

    from l2ray.decode.engine import cache_field

    with torch.device(sizes.device):
        model = AutoModelForCausalLM.from_config(qwen2_config(sizes.decode_shape), dtype=sizes.dtype).eval()
    field = cache_field(model)
    batch, vocab = sizes.decode_batch, sizes.decode_shape.vocab
    ids = torch.randint(0, vocab, (batch, sizes.prompt_tokens), device=sizes.device)
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        state = {"cache": getattr(out, field), "next": out.logits[:, -1].argmax(-1, keepdim=True)}

        def step() -> None:
            out = model(input_ids=state["next"], use_cache=True, logits_to_keep=1, **{field: state["cache"]})
            state["cache"], state["next"] = getattr(out, field), out.logits[:, -1].argmax(-1, keepdim=True)

        seconds = _timed(step, sizes.device, warmup=2, repeats=8)
    return statistics.median(seconds) * 1000


def engine(sizes: Sizes) -> dict[str, Any]:
    """`DecodeEngine` tokens/s at ``sizes.engine_batch`` rows, intervention off and on (boost zh and a
    budget that never binds, so both decode the same number of tokens)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from l2ray.decode.engine import DecodeEngine
    from l2ray.decode.types import DecodeRequest
    from l2ray.recipe import InterventionConfig
    from l2ray.student.build import build_student

    tokenizer = AutoTokenizer.from_pretrained(build_student(Path(tempfile.mkdtemp()) / "tiny"))
    shape = dataclasses.replace(sizes.engine_shape, vocab=max(sizes.engine_shape.vocab, len(tokenizer)))
    with torch.device(sizes.device):
        model = AutoModelForCausalLM.from_config(qwen2_config(shape), dtype=sizes.dtype).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    decoder = DecodeEngine(model, tokenizer)
    prompt = decoder.codec.chat_prompt([{"role": "user", "content": "What is 17 * 23?"}])
    settings = {
        "off": InterventionConfig(),
        "on": InterventionConfig(boost=["zh"], beta=5.0, max_thinking_tokens=100_000),
    }
    figures: dict[str, Any] = {"batch": sizes.engine_batch, "tokens_per_request": sizes.engine_tokens}
    for name, config in settings.items():
        requests = [
            DecodeRequest(prompt, sizes.engine_tokens, config, seed=row, ignore_eos=True)
            for row in range(sizes.engine_batch)
        ]
        decoder.complete(requests[:2])  # warm-up
        [seconds] = _timed(lambda r=requests: decoder.complete(r), sizes.device, warmup=0, repeats=1)
        figures[f"tokens_per_s_{name}"] = sizes.engine_batch * sizes.engine_tokens / seconds
    figures["on_over_off"] = figures["tokens_per_s_on"] / figures["tokens_per_s_off"]
    return figures


def qwen2_config(shape: ModelShape) -> Any:
    """A Qwen2 config of ``shape`` (random weights are all these checks need)."""
    from transformers import Qwen2Config

    return Qwen2Config(
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        vocab_size=shape.vocab,
        tie_word_embeddings=shape.tied,
        max_position_embeddings=32768,
    )


def environment(sizes: Sizes) -> dict[str, Any]:
    import transformers

    device = torch.cuda.get_device_name() if sizes.device == "cuda" else "cpu (smoke)"
    return {"device": device, "torch": torch.__version__, "transformers": transformers.__version__}


def table(results: dict[str, Any]) -> str:
    """The figures as one Markdown table: part, figure, value."""
    lines = [f"GPU check on {results['environment']}", "", "| part | figure | value |", "|---|---|---:|"]
    for part, figures in results.items():
        if part == "environment":
            continue
        for name, value in figures.items():
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            lines.append(f"| {part} | {name} | {shown} |")
    return "\n".join(lines)


@contextlib.contextmanager
def process_group(device: str) -> Iterator[None]:
    """World size 1 for the FSDP2 step: NCCL on a GPU, gloo on CPU."""
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    if device == "cuda":
        torch.cuda.set_device(0)
    dist.init_process_group("nccl" if device == "cuda" else "gloo", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def time_cap(seconds: int) -> Iterator[None]:
    """Raise `PartTimeout` in the part if it runs past ``seconds`` (checked between operations)."""

    def expire(*_: Any) -> None:
        raise PartTimeout(f"ran past its cap of {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _packed_batches(
    vocab: int, tokens: int, count: int, device: torch.device
) -> tuple[list[dict[str, Any]], float]:
    """``count`` packed rows of ``tokens`` tokens of random traces (lengths tokens/16 … tokens/2),
    as l2ray packs them; and the mean trace length (what attention spans)."""
    from l2ray.train.examples import Example
    from l2ray.train.packing import collate_packed, pack_examples

    generator = torch.Generator().manual_seed(0)
    examples, total = [], 0
    while total < tokens * count * 1.2:
        length = int(torch.randint(tokens // 16, tokens // 2 + 1, (1,), generator=generator))
        ids = torch.randint(0, vocab, (length,), generator=generator).tolist()
        examples.append(Example(ids, ids, truncated=False, dropped_tokens=0))
        total += length
    packs = pack_examples(examples, tokens, seed=0)[:count]
    batches = [{k: v.to(device) for k, v in collate_packed([pack]).items()} for pack in packs]
    return batches, total / len(examples)


def _train_steps(
    model: Any, optimizer: Any, batches: list[dict[str, Any]], device: str
) -> tuple[list[int], list[float]]:
    from l2ray.train.step import optimizer_step

    tokens, seconds = [], []
    for batch in batches:
        _sync(device)
        start = time.perf_counter()
        totals = optimizer_step(model, optimizer, [batch], max_grad_norm=1.0)
        _sync(device)
        seconds.append(time.perf_counter() - start)
        tokens.append(totals.tokens)
    return tokens, seconds


def _timed(work: Callable[[], Any], device: str, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        work()
    seconds = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        work()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_memory(device: torch.device) -> float:
    """Peak bytes allocated on the GPU (on CPU: NaN, there is no allocator to ask)."""
    return float(torch.cuda.max_memory_allocated()) if device.type == "cuda" else math.nan


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _release() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="every part on tiny shapes on CPU (gloo)")
    parser.add_argument("--out", default="gpu_check.json", help="where the figures go (JSON)")
    return parser.parse_args()


if __name__ == "__main__":
    main()
