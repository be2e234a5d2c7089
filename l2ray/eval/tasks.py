"""An evaluation's units of work: the task row of one sample, its prompt and its sampling seed.

The versions of the prompt and of the seeding live here, beside what they version, and go into the
evaluation's fingerprint (`l2ray.eval.identity`).
"""

from __future__ import annotations

from typing import Any

from l2ray.hashing import stable_id
from l2ray.languages import LANGUAGES

PROMPT_VERSION = "l2ray-prompt-1"
"""Part of the fingerprint: bump it when `build_messages` changes."""

SEEDING_VERSION = "l2ray-seeding-1"
"""Part of the fingerprint: bump it when `sample_seed` changes (the same settings then sample other
texts, so evaluations before and after must not count as comparable)."""

SEED_RANGE = 2**31
"""Sample seeds stay below this: a signed 32-bit integer, which every OpenAI-compatible server takes."""


def build_messages(question: str, lang: str = "en", instruction: bool = True) -> list[dict[str, str]]:
    """The user turn: the question, then (with ``instruction``) the language's request to reason in
    it and box the answer.

    >>> build_messages("2+2?", instruction=False)
    [{'role': 'user', 'content': '2+2?'}]
    """
    if not instruction:
        return [{"role": "user", "content": question}]
    return [{"role": "user", "content": f"{question}\n\n{LANGUAGES[lang].reasoning_instruction}"}]


def task_row(
    problem: Any, sample: int, configuration: str, question: str, lang: str, seed: int
) -> dict[str, Any]:
    """One unit of work (a flat dict, so Ray Data can move it)."""
    return {
        "benchmark": problem.benchmark,
        "problem_id": problem.id,
        "sample": sample,
        "configuration": configuration,
        "question": question,
        "prompt_lang": lang,
        "gold": problem.answer,
        "answer_type": problem.answer_type,
        "seed": sample_seed(seed, problem.benchmark, problem.id, sample),
    }


def sample_seed(seed: int, benchmark: str, problem_id: str, sample: int) -> int:
    """The sampling seed of one sample of one problem, from the evaluation's ``seed``.

    It depends on nothing else — not the batch the row lands in (``eval.concurrency``), not the order
    of the rows, not the configuration — so an evaluation is reproducible whatever its batching, and
    every configuration samples a problem with the same seed (a paired comparison). The benchmark is
    part of it because problem ids repeat across benchmarks.
    """
    digest = stable_id(SEEDING_VERSION, str(seed), benchmark, str(problem_id), str(sample))
    return int(digest, 16) % SEED_RANGE


__all__ = ["PROMPT_VERSION", "SEEDING_VERSION", "SEED_RANGE", "build_messages", "sample_seed", "task_row"]
