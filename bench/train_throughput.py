"""Training throughput: `l2ray train` on Ray Train vs single-process baselines, in one run.

Same student, same traces, same loss, fused AdamW and a constant learning rate everywhere:

- the machine's matmul peak (``torch.matmul`` GFLOP/s; fp32 on CPU, bf16 on GPU);
- ``hf_trainer``: a plain single-process HF ``Trainer`` (no Ray, no MLflow);
- ``torch_loop``: a bare torch loop over l2ray's own micro-batches (no Ray, no DDP, no MLflow),
  the strictest baseline;
- l2ray with 1 worker, then with 2 workers (skipped on a single GPU), from the ``tokens`` and
  ``step_seconds`` the workers log to MLflow, plus the wall time of the whole `train()` call
  (start-up, logging and registering the model included);
- with ``--fsdp2``: the FSDP2 path (``l2ray.train.fsdp``: meta init, rank-0 broadcast, bf16
  compute, activation checkpointing, chunked loss, packing) on 2 local gloo ranks (CPU), with
  each rank's peak RSS growth against the memory plan (`l2ray.train.memory_plan`);
- model FLOP/s (6 × parameters touched per token, + attention) and MFU against the peak;
- ratios: l2ray 1 worker / each baseline, l2ray 2 workers / 1 worker, FSDP2 2 ranks / torch loop.

Every throughput is measured the same way: all tokens over all time, one optimizer step's end to
the next (data collation, logging and clipping included), leaving out the first step (warm-up) and
the last (l2ray writes its checkpoint there, the Trainer closes its loop).

Usage:
    python bench/train_throughput.py                                  # tiny offline student, CPU
    python bench/train_throughput.py --student-size qwen2.5-0.5b --use-gpu --seq-len 1024 --batch-size 8
    python bench/train_throughput.py --student-size qwen2.5-0.5b --use-gpu --plain-only   # no Ray there
    python bench/train_throughput.py --student-size qwen2.5-0.5b --fsdp2 --plain-only --rounds 1 --steps 3
"""

from __future__ import annotations

import argparse
import itertools
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

from students import SIZES, build_student_of_size  # noqa: E402  (bench/ is on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student-size", choices=SIZES, default="tiny")
    parser.add_argument("--use-gpu", action="store_true")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per measurement")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4, help="per worker")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of every measurement")
    parser.add_argument("--skip-two-workers", action="store_true")
    parser.add_argument("--plain-only", action="store_true", help="peak and baselines only (no Ray needed)")
    parser.add_argument("--fsdp2", action="store_true", help="add FSDP2 on 2 local gloo ranks (CPU only)")
    parser.add_argument("--skip-hf-trainer", action="store_true")
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
    student = build_student_of_size(args.student_size, work / "student")
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
    # A shared machine's speed drifts over minutes: rounds interleave every measurement, and each
    # ratio is taken within a round, so a slow minute weighs on both sides of it.
    rounds = []
    for number in range(1, args.rounds + 1):
        print(f"round {number}/{args.rounds}", flush=True)
        measured: dict[str, Any] = (
            {} if args.skip_hf_trainer else {"hf_trainer": _hf_trainer(student, rows, args, work, device)}
        )
        measured["torch_loop"] = _torch_loop(student, rows, args, device)
        results["model"] = measured["torch_loop"].pop("model")
        if args.fsdp2 and device == "cpu":
            measured["fsdp2_2_ranks"] = _fsdp2(student, rows, args, work / f"fsdp2-{number}")
        if not args.plain_only:
            measured |= _run_l2ray(student, rows, args, work, threads_one, cpus)
        rounds.append(measured)
    results["rounds"] = rounds
    results["load_average_after"] = os.getloadavg()[0]
    _report(results)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


def _run_l2ray(
    student: str, rows: list[Any], args: argparse.Namespace, work: Path, threads: int, cpus: int
) -> dict[str, Any]:
    """`l2ray train` with 1 worker, then 2 (not on a single GPU: two ranks cannot share one device).

    Ray runs only for these two, so the baselines never share the machine with an idle cluster.
    """
    import ray
    import torch

    ray.init(
        address="local",
        num_cpus=cpus,
        num_gpus=1 if args.use_gpu else 0,
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        measured = {"l2ray_1_worker": _l2ray(student, rows, args, work, workers=1, cpus_per_worker=threads)}
        if not args.skip_two_workers and not (args.use_gpu and torch.cuda.device_count() < 2):
            per_worker = 1 if args.use_gpu else max(cpus / 2, 0.5)
            measured["l2ray_2_workers"] = _l2ray(
                student, rows, args, work, workers=2, cpus_per_worker=per_worker
            )
        return measured
    finally:
        ray.shutdown()


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


def _hf_trainer(
    student: str, rows: list[Any], args: argparse.Namespace, work: Path, device: str
) -> dict[str, Any]:
    """The issue's baseline: HF ``Trainer`` in one process on the same examples (its own shuffling)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

    from l2ray.train.examples import collate

    tokenizer = AutoTokenizer.from_pretrained(student)
    examples = _examples(tokenizer, rows, args.seq_len)
    batch_tokens: list[int] = []
    step_ends: list[float] = []

    def collator(batch: list[Any]) -> dict[str, Any]:
        # Batches are collated in step order (one ahead at most), so the i-th call feeds step i.
        collated = collate(batch, tokenizer.pad_token_id)
        batch_tokens.append(int(collated["attention_mask"].sum()))
        return collated

    class Clock(TrainerCallback):
        def on_train_begin(self, *_: Any, **__: Any) -> None:
            step_ends.append(time.perf_counter())

        def on_step_end(self, *_: Any, **__: Any) -> None:
            _sync(device)
            step_ends.append(time.perf_counter())

    torch.manual_seed(0)
    trainer = Trainer(
        model=AutoModelForCausalLM.from_pretrained(student),
        args=TrainingArguments(
            output_dir=str(work / "hf-trainer"),
            max_steps=args.steps + 2,
            per_device_train_batch_size=args.batch_size,
            learning_rate=1e-4,
            lr_scheduler_type="constant",
            max_grad_norm=1.0,
            bf16=device == "cuda",
            use_cpu=device == "cpu",
            dataloader_pin_memory=device == "cuda",
            remove_unused_columns=False,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            seed=0,
        ),
        train_dataset=examples,
        data_collator=collator,
        callbacks=[Clock()],
    )
    trainer.train()
    seconds = [end - start for start, end in itertools.pairwise(step_ends)]
    return {"tokens_per_s": _throughput(batch_tokens[: len(seconds)], seconds)}


def _torch_loop(student: str, rows: list[Any], args: argparse.Namespace, device: str) -> dict[str, Any]:
    """The strictest baseline: l2ray's micro-batches, loss and fused AdamW in a bare loop."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from l2ray.train.examples import collate, micro_batch
    from l2ray.train.loss import LossModel
    from l2ray.train.step import optimizer_step

    tokenizer = AutoTokenizer.from_pretrained(student)
    examples = _examples(tokenizer, rows, args.seq_len)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(student).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    loss_model = LossModel(model)
    tokens, seconds, seq_lens = [], [], []
    last = time.perf_counter()
    for index in range(args.steps + 2):
        batch = collate(micro_batch(examples, index, args.batch_size, seed=0), tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        optimizer_step(loss_model, optimizer, [batch], max_grad_norm=1.0, autocast_bf16=device == "cuda")
        _sync(device)
        now = time.perf_counter()
        seconds.append(now - last)
        last = now
        tokens.append(int(batch["attention_mask"].sum()))
        seq_lens.append(batch["input_ids"].shape[1])
    return {
        "tokens_per_s": _throughput(tokens, seconds),
        "model": _model_shape(model, statistics.mean(seq_lens)),
    }


def _fsdp2(student: str, rows: list[Any], args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """FSDP2 on 2 local gloo ranks; tokens/s over both ranks, peak RSS growth per rank vs the plan."""
    from transformers import AutoTokenizer

    from l2ray.recipe import TrainConfig
    from l2ray.train.local_ranks import run_ranks
    from l2ray.train.memory_plan import memory_plan, shape_of

    examples = _examples(AutoTokenizer.from_pretrained(student), rows, args.seq_len)
    ranks = run_ranks(_fsdp2_rank, folder, student, examples, vars(args))
    config = TrainConfig(
        strategy="fsdp2", num_workers=2, batch_size=1, max_seq_len=args.seq_len, activation_checkpointing=True
    )
    plan = memory_plan(shape_of(student), config)
    tokens = [sum(step) for step in zip(*(r["tokens"] for r in ranks), strict=True)]
    return {
        "tokens_per_s": _throughput(tokens, ranks[0]["seconds"]),
        "real_token_ratio": sum(tokens) / sum(sum(r["computed"]) for r in ranks),
        # CPU has no CUDA workspace: compare what the plan counts on the device without it.
        "plan_gib": (plan.gpu_total - plan.gpu["workspace"]) / 2**30,
        "plan_state_gib": sum(plan.gpu[k] for k in ("parameters", "gradients", "optimizer")) / 2**30,
        "rss_growth_gib": [r["rss_growth"] / 2**30 for r in ranks],
        "state_gib": [r["state"] / 2**30 for r in ranks],
    }


def _fsdp2_rank(rank: int, student: str, examples: list[Any], args: dict[str, Any]) -> dict[str, Any]:
    """One rank of `_fsdp2`: packed micro-batches of ``seq_len`` tokens, bf16 compute, checkpointing."""
    import torch

    from l2ray.train.examples import micro_batch
    from l2ray.train.fsdp import ShardSettings, build_sharded
    from l2ray.train.packing import collate_packed, pack_examples
    from l2ray.train.step import optimizer_step

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    before = _peak_rss()
    model, _, _ = build_sharded(student, torch.device("cpu"), ShardSettings(bf16=True, chunk_tokens=1024))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
    packs = pack_examples(examples, args["seq_len"], seed=0, rank=rank)
    tokens, computed, seconds = [], [], []
    last = time.perf_counter()
    for index in range(args["steps"] + 2):
        batch = collate_packed(micro_batch(packs, index, 1, seed=0, rank=rank))
        totals = optimizer_step(model, optimizer, [batch], max_grad_norm=1.0)
        now = time.perf_counter()
        seconds.append(now - last)
        last = now
        tokens.append(totals.tokens)
        computed.append(totals.computed_tokens)
    state = sum(p.to_local().numel() * 4 * 2 for p in model.parameters())  # fp32 shard + its gradient buffer
    state += sum(
        t.to_local().numel() * t.element_size()
        for s in optimizer.state.values()
        for t in s.values()
        if t.dim()
    )
    peak = _peak_rss()
    return {
        "tokens": tokens,
        "computed": computed,
        "seconds": seconds,
        "rss_growth": peak - before,
        "state": state,
    }


def _peak_rss() -> int:
    """This process's peak RSS in bytes (Linux ``VmHWM``: unlike ``ru_maxrss`` it does not carry the
    parent's peak over into a spawned child)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (the FSDP2 bench measures memory on Linux only)")


def _l2ray(
    student: str, rows: list[Any], args: argparse.Namespace, work: Path, workers: int, cpus_per_worker: float
) -> dict[str, Any]:
    """`l2ray.train.api.train` end to end; throughput from the per-step metrics rank 0 logged."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from mlflow import MlflowClient

    from l2ray.recipe import recipe_from_dict
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
                "max_steps": args.steps + 2,
                "batch_size": args.batch_size,
                "max_seq_len": args.seq_len,
                "num_workers": workers,
                "cpus_per_worker": cpus_per_worker,
                "use_gpu": args.use_gpu,
                "gpus_per_worker": 1.0,
                "checkpoint_every": args.steps + 2,
                "keep_checkpoints": 1,
                "max_failures": 0,
            },
        }
    )
    start = time.perf_counter()
    result = train(recipe, traces)
    wall = time.perf_counter() - start
    client = MlflowClient(tracking_uri=recipe.tracking_uri)
    tokens, seconds = (
        [m.value for m in sorted(client.get_metric_history(result.run_id, name), key=lambda m: m.step)]
        for name in ("tokens", "step_seconds")
    )
    return {"tokens_per_s": _throughput(tokens, seconds), "train_wall_s": wall, "steps": result.steps}


def _examples(tokenizer: Any, rows: list[Any], seq_len: int) -> list[Any]:
    from l2ray.train.examples import encode_example

    return [encode_example(tokenizer, r.question, r.assistant_text(), seq_len) for r in rows]


def _throughput(tokens: list[float], seconds: list[float]) -> float:
    """All tokens over all time, without the first step (warm-up) and the last (checkpoint, teardown)."""
    if len(tokens) != len(seconds) or len(seconds) < 3:
        raise ValueError(
            f"need the same number (≥ 3) of token and time entries, got {len(tokens)}/{len(seconds)}"
        )
    return sum(tokens[1:-1]) / sum(seconds[1:-1])


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
    """Median tokens/s over the rounds, and ratios taken within each round (their median first)."""
    rounds = results["rounds"]
    peak = results["matmul_peak_gflops"]
    flops_per_token = results["model"]["flops_per_token"]
    where = f"{results['device']} ({results['cpus']} CPUs)"
    print(f"\nstudent {results['student']} on {where}, {len(rounds)} rounds")
    before, after = results["load_average_before"], results["load_average_after"]
    print(f"  load average (1 min) {before:.1f} before, {after:.1f} after")
    print(f"  parameters {results['model']['parameters']:,}; {flops_per_token / 1e6:.1f} MFLOP per token")
    print(f"  matmul peak: {peak:,.1f} GFLOP/s")
    print(f"  {'':18} {'tokens/s':>10} {'GFLOP/s':>9} {'MFU':>7} {'train() wall s':>15}")
    summary: dict[str, Any] = {}
    for name in ("hf_trainer", "torch_loop", "l2ray_1_worker", "l2ray_2_workers", "fsdp2_2_ranks"):
        entries = [r[name] for r in rounds if name in r]
        if not entries:
            print(f"  {name:18} skipped")
            continue
        rate = statistics.median(e["tokens_per_s"] for e in entries)
        gflops = rate * flops_per_token / 1e9
        walls = [e["train_wall_s"] for e in entries if "train_wall_s" in e]
        wall = f"{statistics.median(walls):.1f}" if walls else "-"
        summary[name] = {"tokens_per_s": rate, "gflops": gflops, "mfu": gflops / peak}
        print(f"  {name:18} {rate:>10,.0f} {gflops:>9,.2f} {gflops / peak:>7.1%} {wall:>15}")
    pairs = [
        ("l2ray_1_worker", "hf_trainer"),
        ("l2ray_1_worker", "torch_loop"),
        ("l2ray_2_workers", "l2ray_1_worker"),
        ("fsdp2_2_ranks", "torch_loop"),
    ]
    for measured, baseline in pairs:
        per_round = [
            r[measured]["tokens_per_s"] / r[baseline]["tokens_per_s"]
            for r in rounds
            if measured in r and baseline in r
        ]
        if not per_round:
            continue
        summary[f"ratio_{measured}_vs_{baseline}"] = statistics.median(per_round)
        each = ", ".join(f"{ratio:.2f}" for ratio in per_round)
        print(f"  ratio {measured} / {baseline}: {statistics.median(per_round):.2f} (rounds: {each})")
    for entry in (r["fsdp2_2_ranks"] for r in rounds if "fsdp2_2_ranks" in r):
        growth = ", ".join(f"{g:.2f}" for g in entry["rss_growth_gib"])
        state = ", ".join(f"{g:.2f}" for g in entry["state_gib"])
        print(
            f"  fsdp2 per rank: allocated state {state} GiB vs plan {entry['plan_state_gib']:.2f}; "
            f"peak RSS growth {growth} GiB vs plan {entry['plan_gib']:.2f} (rank 0 also loads the copy); "
            f"real/computed tokens {entry['real_token_ratio']:.2f}"
        )
    results["summary"] = summary


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
