"""Training throughput: `l2ray train` on Ray Train vs a plain single-process torch loop.

Same student, same traces, same micro-batches, same loss and optimizer, in one run:

- the machine's matmul peak (``torch.matmul`` GFLOP/s; fp32 on CPU, bf16 on GPU);
- plain: a single-process loop over `l2ray.train.examples` (no Ray, no DDP, no MLflow);
- l2ray with 1 worker, then with 2 workers (skipped on a single GPU): the median tokens/s the
  workers report per optimizer step, plus the wall time of the whole `train()` call (start-up,
  logging and registering the model included);
- model FLOP/s (6 × parameters touched per token, + attention) and MFU against the peak;
- ratios: l2ray 1 worker / plain, l2ray 2 workers / 1 worker.

Usage:
    python bench/train_throughput.py                                  # tiny offline student, CPU
    python bench/train_throughput.py --student-size qwen2.5-0.5b --use-gpu --seq-len 1024 --batch-size 8
    python bench/train_throughput.py --student-size qwen2.5-0.5b --use-gpu --plain-only   # no Ray there
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# Run as a script, ``bench/`` is on sys.path and the repo is not: import this checkout's l2ray.
sys.path.insert(0, str(REPO))

# Qwen2.5-0.5B's shape (a config, random init: nothing is downloaded).
QWEN25_05B = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": True,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student-size", choices=["tiny", "qwen2.5-0.5b"], default="tiny")
    parser.add_argument("--use-gpu", action="store_true")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per measurement")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4, help="per worker")
    parser.add_argument("--skip-two-workers", action="store_true")
    parser.add_argument("--plain-only", action="store_true", help="peak and plain loop only (no Ray needed)")
    parser.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = parser.parse_args()
    for key, value in {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
    }.items():
        os.environ.setdefault(key, value)

    import torch

    work = Path(tempfile.mkdtemp(prefix="l2ray-train-bench-"))
    student = _build_student(args.student_size, work / "student")
    rows = _trace_rows(args.rows)
    cpus = os.cpu_count() or 1
    device = "cuda" if args.use_gpu else "cpu"
    # One worker gets the whole machine; two workers split it. The plain loop matches one worker.
    threads_one = 1 if args.use_gpu else cpus
    results: dict[str, Any] = {"student": args.student_size, "device": device, "cpus": cpus}
    # Other processes on a small machine skew every number here: record how busy it was.
    results["load_average_before"] = os.getloadavg()[0]
    torch.set_num_threads(threads_one)
    results["matmul_peak_gflops"] = _matmul_peak(device)
    results["plain"] = _plain_loop(student, rows, args, device)
    results["model"] = results["plain"].pop("model")

    results["l2ray_1_worker"] = results["l2ray_2_workers"] = None
    if not args.plain_only:
        _run_l2ray(results, student, rows, args, work, threads_one)
    results["load_average_after"] = os.getloadavg()[0]
    _report(results)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


def _run_l2ray(
    results: dict[str, Any], student: str, rows: list[Any], args: argparse.Namespace, work: Path, threads: int
) -> None:
    """`l2ray train` with 1 worker, then 2 (not on a single GPU: two ranks cannot share one device)."""
    import ray
    import torch

    cpus = results["cpus"]
    ray.init(
        address="local",
        num_cpus=cpus,
        num_gpus=1 if args.use_gpu else 0,
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        results["l2ray_1_worker"] = _l2ray(student, rows, args, work, workers=1, cpus_per_worker=threads)
        if not args.skip_two_workers and not (args.use_gpu and torch.cuda.device_count() < 2):
            per_worker = 1 if args.use_gpu else max(cpus / 2, 0.5)
            results["l2ray_2_workers"] = _l2ray(
                student, rows, args, work, workers=2, cpus_per_worker=per_worker
            )
    finally:
        ray.shutdown()


def _build_student(size: str, folder: Path) -> str:
    """The offline tiny student, or a random-init model of Qwen2.5-0.5B's shape with its tokenizer."""
    from l2ray.student.resolve import resolve_student

    tiny = resolve_student("builtin:tiny", cache_dir=folder.parent / "cache")
    if size == "tiny":
        return tiny
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny)  # ids stay < 4096: only the shapes matter here
    torch.manual_seed(0)
    config = Qwen2Config(
        **QWEN25_05B,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
    )
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _trace_rows(count: int) -> list[Any]:
    """``count`` original-kind traces cycled from the bundled seeds (distinct ids)."""
    from l2ray.data.seeds import load_seeds
    from l2ray.text.tags import insert_tags
    from l2ray.traces import TraceRow

    seeds = load_seeds().rows
    return [
        TraceRow(
            id=f"bench-{i}",
            seed_id=seeds[i % len(seeds)].id,
            kind="original",
            question=seeds[i % len(seeds)].question,
            question_lang="en",
            cot=insert_tags([("en", seeds[i % len(seeds)].cot)]),
            response=seeds[i % len(seeds)].final_response(),
            answer=seeds[i % len(seeds)].answer,
            languages=["en"],
        )
        for i in range(count)
    ]


def _matmul_peak(device: str) -> float:
    """Best of a few large square matmuls, in GFLOP/s (fp32 on CPU, bf16 on GPU)."""
    import torch

    n = 8192 if device == "cuda" else 2048
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    for _ in range(5):
        _sync(device)
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        _sync(device)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def _plain_loop(student: str, rows: list[Any], args: argparse.Namespace, device: str) -> dict[str, Any]:
    """The baseline: the same examples, batches, loss and AdamW in one process."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from l2ray.traces import assistant_text
    from l2ray.train.examples import IGNORE_INDEX, collate, encode_example, token_loss_sum

    tokenizer = AutoTokenizer.from_pretrained(student)
    model = AutoModelForCausalLM.from_pretrained(student).to(device)
    model.train()
    examples = [encode_example(tokenizer, r.question, assistant_text(r), args.seq_len) for r in rows]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device == "cuda" else None
    rates, seq_lens = [], []
    for step in range(args.steps + 1):  # step 0 warms up
        batch = collate(
            [examples[(step * args.batch_size + i) % len(examples)] for i in range(args.batch_size)],
            tokenizer.pad_token_id,
        )
        batch = {k: v.to(device) for k, v in batch.items()}
        _sync(device)
        start = time.perf_counter()
        if autocast is not None:
            with autocast:
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        else:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        targets = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        (token_loss_sum(logits, batch["labels"]) / max(targets, 1)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if step > 0:
            rates.append(int(batch["attention_mask"].sum()) / (time.perf_counter() - start))
            seq_lens.append(batch["input_ids"].shape[1])
    return {"tokens_per_s": statistics.median(rates), "model": _model_shape(model, statistics.mean(seq_lens))}


def _l2ray(
    student: str, rows: list[Any], args: argparse.Namespace, work: Path, workers: int, cpus_per_worker: float
) -> dict[str, Any]:
    """`l2ray.train.api.train` end to end; throughput is the median of the per-step tokens/s."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from l2ray.config import recipe_from_dict
    from l2ray.train.api import train

    traces = work / "traces"
    traces.mkdir(exist_ok=True)
    pq.write_table(pa.Table.from_pylist([r.model_dump() for r in rows]), traces / "part-0000.parquet")
    recipe = recipe_from_dict(
        {
            "name": f"bench-{workers}w",
            "output_dir": str(work / "runs"),
            "student": {"model": student},
            "train": {
                "lr": 1e-4,
                "lr_schedule": "constant",
                "warmup_ratio": 0.0,
                "max_steps": args.steps + 1,
                "batch_size": args.batch_size,
                "max_seq_len": args.seq_len,
                "num_workers": workers,
                "cpus_per_worker": cpus_per_worker,
                "use_gpu": args.use_gpu,
                "gpus_per_worker": 1.0,
                "checkpoint_every": args.steps + 1,
                "keep_checkpoints": 1,
                "max_failures": 0,
            },
        }
    )
    start = time.perf_counter()
    result = train(recipe, traces)
    wall = time.perf_counter() - start
    from mlflow import MlflowClient

    history = MlflowClient(tracking_uri=recipe.tracking_uri).get_metric_history(result.run_id, "tokens_per_s")
    rates = [m.value for m in sorted(history, key=lambda m: m.step)][1:]  # step 1 warms up
    return {"tokens_per_s": statistics.median(rates), "train_wall_s": wall, "steps": result.steps}


def _model_shape(model: Any, seq_len: float) -> dict[str, Any]:
    """Parameters that cost FLOPs per token (the input embedding is a lookup) and FLOPs per token."""
    config = model.config
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    output = model.get_output_embeddings().weight.numel()
    tied = config.tie_word_embeddings
    matmul_params = total - embedding + (output if tied else 0)
    # 6 N per token for forward + backward, plus attention scores/values: 12 · layers · hidden · seq.
    flops_per_token = 6 * matmul_params + 12 * config.num_hidden_layers * config.hidden_size * seq_len
    return {"parameters": total, "matmul_parameters": matmul_params, "flops_per_token": flops_per_token}


def _report(results: dict[str, Any]) -> None:
    peak = results["matmul_peak_gflops"]
    flops_per_token = results["model"]["flops_per_token"]
    print(f"\nstudent {results['student']} on {results['device']} ({results['cpus']} CPUs)")
    before, after = results["load_average_before"], results["load_average_after"]
    print(f"  load average (1 min) {before:.1f} before, {after:.1f} after")
    print(f"  parameters {results['model']['parameters']:,}; {flops_per_token / 1e6:.1f} MFLOP per token")
    print(f"  matmul peak: {peak:,.1f} GFLOP/s")
    print(f"  {'':18} {'tokens/s':>10} {'GFLOP/s':>9} {'MFU':>7} {'train() wall s':>15}")
    for name in ("plain", "l2ray_1_worker", "l2ray_2_workers"):
        entry = results[name]
        if entry is None:
            print(f"  {name:18} skipped")
            continue
        gflops = entry["tokens_per_s"] * flops_per_token / 1e9
        entry["gflops"], entry["mfu"] = gflops, gflops / peak
        wall = f"{entry['train_wall_s']:.1f}" if "train_wall_s" in entry else "-"
        print(f"  {name:18} {entry['tokens_per_s']:>10,.0f} {gflops:>9,.2f} {entry['mfu']:>7.1%} {wall:>15}")
    if results["l2ray_1_worker"] is None:
        return
    one = results["l2ray_1_worker"]["tokens_per_s"]
    print(f"  ratio l2ray 1 worker / plain loop: {one / results['plain']['tokens_per_s']:.2f}")
    if results["l2ray_2_workers"] is not None:
        print(f"  ratio l2ray 2 workers / 1 worker:  {results['l2ray_2_workers']['tokens_per_s'] / one:.2f}")


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
