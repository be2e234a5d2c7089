"""What the intervention costs per decoding step, against one pass over the vocabulary, at real batch sizes.

For each batch size and vocabulary, on random logits where tags often sit near the top, every request
with boost zh + suppress en + a thinking budget + one s1 ignore (the settings that exercise every
pass), it times per step:

- ``argmax`` — a bare ``logits.argmax(-1)`` over the same tensor: the unit, one full-vocabulary pass;
- ``per-row`` — the per-row path l2ray's processors ran before the tensor core (`RequestPolicy` per
  row, `l2ray.decode.reference.vllm_step`: Python per row, host syncs for the top-k ids and argmax);
- ``core`` — `PolicyCore` as Model Runner V2 drives it: rows mapped to slots, the tokens sampled last
  step read on the device, no host sync;
- ``V1`` — the V1 model runner's adapter (`V1Processor`, tokens read from vLLM's host lists), when
  vLLM is installed.

It prints the time per step, the ratio to ``argmax`` (full-vocabulary passes), the tensor operations
a step dispatches (what a GPU pays a kernel launch for, each: constant in the batch for the core,
proportional to it for the per-row path) and the per-row path over the core; on ``--device cuda``
also the host time to issue a step (what async scheduling hides). The sampler that feeds each step's
tokens back (an ``argmax``) is not timed.

    .venv/bin/python bench/intervention_step.py                        # CPU, 1/32/256/1024 x 1,024/151,936
    .venv/bin/python bench/intervention_step.py --device cuda
    .venv/bin/python bench/intervention_step.py --batches 256 --vocabs 151936 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from l2ray.decode import reference
from l2ray.decode.core import PolicyCore
from l2ray.decode.policy import RequestPolicy
from l2ray.decode.spec import PolicySpec, ReasoningVocab
from l2ray.languages import LANGUAGES
from l2ray.recipe import InterventionConfig

CONFIG = InterventionConfig(
    boost=["zh"], suppress=["en"], beta=5.0, max_thinking_tokens=100_000, num_ignore=1
)
DISTINCT = 4
"""Distinct logits tensors cycled through (tags near the top in some rows, not in others)."""


@dataclass
class Timing:
    path: str
    batch: int
    vocab: int
    ms: float
    host_ms: float
    passes: float
    ops: int


Step = Callable[[torch.Tensor], torch.Tensor]
"""A processor step: the logits in, the edited logits out (the sampler and its token feed are not timed)."""


def main() -> None:
    args = _parse()
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    timings: list[Timing] = []
    for vocab in args.vocabs:
        for batch in args.batches:
            timings += measure(batch, vocab, args.device, args.steps, per_row=not args.skip_per_row)
    print(table(timings, args.device))
    if args.json:
        with open(args.json, "w") as out:
            json.dump([asdict(t) for t in timings], out, indent=1)


def measure(batch: int, vocab: int, device: str, steps: int, per_row: bool = True) -> list[Timing]:
    """Every path's time per step at one shape; ``passes`` is each path's time over ``argmax``'s."""
    case = Case(batch, vocab, device)
    paths: dict[str, tuple[Step, Callable[[torch.Tensor], None]]] = {
        "argmax": (lambda x: x.argmax(-1), lambda _: None),
        "core": (case.core_step, case.feed_core),
    }
    v1 = case.v1_paths()
    if v1 is not None:
        paths["V1"] = v1
    if per_row:
        paths["per-row"] = (case.per_row_step, case.feed_per_row)
    timings = []
    for name, (step, feed) in paths.items():
        ms, host = _time(step, feed, case, device, steps if name != "per-row" else max(3, steps // 10))
        timings.append(Timing(name, batch, vocab, ms, host, 0.0, _ops(step, feed, case)))
    for timing in timings:
        timing.passes = timing.ms / timings[0].ms
    return timings


class Case:
    """One shape: a vocabulary with ten language tags at its end, a batch of requests, random logits."""

    def __init__(self, batch: int, vocab: int, device: str) -> None:
        codes = list(LANGUAGES)[:10]
        tags = {code: vocab - 1 - i for i, code in enumerate(codes)}
        self.vocab = ReasoningVocab(tags, think_end_id=vocab - 12, stop_ids=(vocab - 13,))
        self.specs = [PolicySpec(CONFIG, seed=row, ignore_ids=(7, 8)) for row in range(batch)]
        self.device = device
        self.logits = [_logits(batch, vocab, self.vocab, device) for _ in range(DISTINCT)]
        self.policies = [RequestPolicy.from_spec(spec, self.vocab) for spec in self.specs]
        self.core = PolicyCore(self.vocab, batch, device, counts=False)  # as the vLLM adapters run it
        for slot, spec in enumerate(self.specs):
            self.core.admit(slot, spec)
        self.slots = torch.randperm(batch, device=device)  # rows -> slots, as Model Runner V2 maps them
        self.tokens = torch.zeros(batch, dtype=torch.long, device=device)
        self.row_tokens = [0] * batch
        self.needs = self.core.needs(self.slots.cpu().numpy())
        self.batch = batch

    def core_step(self, logits: torch.Tensor) -> torch.Tensor:
        rows = self.core.rows(self.batch, self.slots)
        self.core.observe(rows, self.tokens, needs=self.needs)
        logits = self.core.before_sampling(rows, logits, self.needs)
        self.core.commit(rows)
        return logits

    def feed_core(self, edited: torch.Tensor) -> None:
        self.tokens = edited.argmax(-1)  # stays on the device, as Model Runner V2 commits it

    def per_row_step(self, logits: torch.Tensor) -> torch.Tensor:
        for policy, token in zip(self.policies, self.row_tokens, strict=True):
            policy.observe(token)
        return reference.vllm_step(self.policies, logits)

    def feed_per_row(self, edited: torch.Tensor) -> None:
        self.row_tokens = edited.argmax(-1).tolist()

    def v1_paths(self) -> tuple[Step, Callable[[torch.Tensor], None]] | None:
        """The V1 adapter's step, fed through vLLM's own batch interface (``None`` without vLLM)."""
        try:
            from vllm import SamplingParams
            from vllm.v1.sample.logits_processor import BatchUpdate

            from l2ray.decode.vllm_requests import request_args
            from l2ray.decode.vllm_v1 import V1Processor
        except ImportError:
            return None
        processor = V1Processor(self.vocab, self.device, self.batch)
        outputs: list[list[int]] = [[] for _ in self.specs]
        added = [
            (r, SamplingParams(extra_args=request_args(s)), [], outputs[r]) for r, s in enumerate(self.specs)
        ]
        processor.update_state(BatchUpdate(self.batch, removed=[], added=added, moved=[]))

        def step(logits: torch.Tensor) -> torch.Tensor:
            processor.update_state(None)
            return processor.apply(logits)

        def feed(edited: torch.Tensor) -> None:  # vLLM's sampler appends to the live output lists
            for out, token in zip(outputs, edited.argmax(-1).tolist(), strict=True):
                out.append(token)

        return step, feed


def table(timings: list[Timing], device: str) -> str:
    """The results as a Markdown table."""
    lines = [
        f"intervention per decoding step on {device} ({CONFIG.model_dump(exclude_defaults=True)})",
        "",
        "| vocab | batch | path | ms/step | host ms/step | full-vocab passes | ops/step | per-row / this |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    per_row = {(t.batch, t.vocab): t.ms for t in timings if t.path == "per-row"}
    for t in timings:
        speedup = per_row.get((t.batch, t.vocab))
        ratio = f"{speedup / t.ms:.1f}" if speedup and t.path in ("core", "V1") else ""
        cells = [
            f"{t.vocab:,}",
            str(t.batch),
            t.path,
            f"{t.ms:.3f}",
            f"{t.host_ms:.3f}",
            f"{t.passes:.2f}",
            str(t.ops),
            ratio,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _time(
    step: Step, feed: Callable[[torch.Tensor], None], case: Case, device: str, steps: int
) -> tuple[float, float]:
    """Median ms per step (device time on CUDA) and the mean host ms to issue one."""
    cuda = device.startswith("cuda")
    for i in range(3):  # warm-up
        feed(step(case.logits[i % DISTINCT].clone()))
    totals, host = [], []
    for i in range(steps):
        work = case.logits[i % DISTINCT].clone()
        if cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        began = time.perf_counter()
        edited = step(work)
        host.append(time.perf_counter() - began)
        if cuda:
            end.record()
            torch.cuda.synchronize()
            totals.append(start.elapsed_time(end) / 1000)
        else:
            totals.append(host[-1])
        feed(edited)
    return statistics.median(totals) * 1000, statistics.mean(host) * 1000


def _ops(step: Step, feed: Callable[[torch.Tensor], None], case: Case) -> int:
    """Tensor operations one step dispatches (what a GPU pays a kernel launch for, each)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            Counter.calls += 1
            return func(*args, **(kwargs or {}))

    work = case.logits[0].clone()
    with Counter():
        edited = step(work)
    feed(edited)
    return Counter.calls


def _logits(batch: int, vocab: int, reasoning: ReasoningVocab, device: str) -> torch.Tensor:
    """Random logits; the tag columns get a lift so a share of rows has a tag among its top 20."""
    logits = torch.randn(batch, vocab, device=device) * 2
    tags = torch.tensor(list(reasoning.tag_ids.values()), device=device)
    logits[:, tags] += torch.rand(batch, len(tags), device=device) * 9
    logits[:, reasoning.think_end_id] += torch.rand(batch, device=device) * 8
    return logits


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 32, 256, 1024]
    )
    parser.add_argument("--vocabs", type=lambda s: [int(x) for x in s.split(",")], default=[1024, 151_936])
    parser.add_argument(
        "--steps", type=int, default=30, help="timed steps per path (the per-row path a tenth)"
    )
    parser.add_argument("--skip-per-row", action="store_true", help="leave out the slow per-row baseline")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", help="also write the timings here")
    return parser.parse_args()


if __name__ == "__main__":
    main()
