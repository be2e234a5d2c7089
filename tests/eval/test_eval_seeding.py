"""Sampling seeds follow the problem, not its place in a batch: the offline student in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from evalkit import make_recipe

from l2ray.eval.api import run_eval
from l2ray.eval.benchmarks import Problem
from l2ray.eval.engines import LocalEngine, SampleRequest
from l2ray.eval.report import read_samples
from l2ray.eval.tasks import sample_seed, task_row
from l2ray.recipe import InterventionConfig

# A partial intervention draws from the policy's own RNG even where the model would decide alone.
CONFIGURATIONS = {"off": {}, "half_zh": {"boost": ["zh"], "beta": 8.0, "alpha": 0.5}}


def _evaluate(tmp_path: Path, student_path: Path, concurrency: int) -> tuple[dict[str, Any], dict]:
    recipe = make_recipe(
        tmp_path,
        student_path,
        limit=3,
        samples=2,
        max_tokens=12,
        temperature=1.0,
        concurrency=concurrency,
        configurations=CONFIGURATIONS,
        label=f"batch-{concurrency}",
        device="cpu",  # GPU kernels may round differently per batch shape; the seeds are what is tested
    )
    result = run_eval(recipe)
    records = read_samples(result.out_dir / "samples.jsonl")
    texts = {(r["problem_id"], r["sample"], r["configuration"]): r["response"] for r in records}
    return result.summary, texts


@pytest.mark.slow
def test_sampled_generations_do_not_depend_on_the_batch_size(
    ray_cluster, student_path, tmp_path: Path
) -> None:
    # One row per batch, then batches of five that mix problems, samples and configurations.
    alone, by_alone = _evaluate(tmp_path, student_path, concurrency=1)
    batched, by_batched = _evaluate(tmp_path, student_path, concurrency=5)

    assert len(by_alone) == 3 * 2 * 2
    assert by_batched == by_alone
    # The runs are comparable, and they are because their generations are the same.
    assert batched["comparable_hash"] == alone["comparable_hash"]
    # Temperature 1 really sampled: the two samples of a problem are not one text twice.
    assert any(text != by_alone[(p, 1, c)] for (p, s, c), text in by_alone.items() if s == 0)


def test_a_sample_seed_depends_on_the_problem_and_sample_only() -> None:
    problems = [Problem("mini", f"p{i}", f"q{i}", "1", "integer") for i in range(3)]
    rows = [task_row(p, s, "off", p.question, "en", seed=7) for p in problems for s in range(2)]
    shuffled = [task_row(p, s, "boost", p.question, "en", seed=7) for p in reversed(problems) for s in (1, 0)]

    seeds = {(r["problem_id"], r["sample"]): r["seed"] for r in rows}
    # The same (problem, sample) keeps its seed in another order and under another configuration …
    assert {(r["problem_id"], r["sample"]): r["seed"] for r in shuffled} == seeds
    # … every (problem, sample) has its own, and the eval seed moves them all.
    assert len(set(seeds.values())) == len(seeds)
    assert all(sample_seed(8, "mini", p, s) != seed for (p, s), seed in seeds.items())
    # A seed fits a signed 32-bit integer, which any OpenAI-compatible server accepts.
    assert all(0 <= seed < 2**31 for seed in seeds.values())


def test_local_engine_samples_each_request_with_its_own_seed(student_path: Path) -> None:
    # A request's seed is the seed it samples with, whatever shares its batch (even the same seed).
    engine = LocalEngine(str(student_path), device="cpu")
    partial = InterventionConfig(boost=["zh"], beta=8.0, alpha=0.5)

    def request(index: int, seed: int, intervention: InterventionConfig) -> SampleRequest:
        messages = [{"role": "user", "content": f"What is {index} + {index}?"}]
        return SampleRequest(str(index), messages, intervention, 10, 1.0, seed)

    seeds = (5, 5, 5, 5, 9)
    requests = [request(i, seed, partial if i % 2 else InterventionConfig()) for i, seed in enumerate(seeds)]
    together = engine.generate(requests)
    one_by_one = [engine.generate([r])[0] for r in reversed(requests)][::-1]
    assert all(g.error is None and g.text for g in together)
    assert [g.text for g in together] == [g.text for g in one_by_one]
