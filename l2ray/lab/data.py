r"""The lab's files: English seeds, the evaluation set, the pilot's seeds, and the paraphrase
baseline's traces (the same number of rows as L², about the same tokens, English only).

Example:
    >>> from l2ray.lab.tasks import make_problems
    >>> rows = seed_records(make_problems("seeds", 2, 0))
    >>> sorted(rows[0]) == ["answer", "cot", "id", "question", "solution", "source"]
    True
    >>> rows[0]["cot"].count("Wait, let me check") >= 1
    True
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from l2ray.hashing import stable_id
from l2ray.lab.render import PARAPHRASES, render_text
from l2ray.lab.tasks import WordProblem, make_problems, question_plan, response_plan, solution_plan
from l2ray.lab.teacher import problem_from_question
from l2ray.text import insert_tags
from l2ray.traces import TRACE_COLUMNS, TraceRow

SOURCE = "l2ray-lab"
PARAPHRASE_STYLES = ("en", *PARAPHRASES)
BUNDLED_SEEDS, BUNDLED_EVAL = 50, 200
"""How many lab seeds and evaluation problems ship in ``l2ray/data`` (``bundled:lab_seeds.jsonl``,
benchmark ``lab``) for recipes that run on the lab task, such as the demo."""


def seed_records(problems: list[WordProblem]) -> list[dict[str, str]]:
    """Seed rows (`l2ray.data.seeds.SeedRow` fields): question, English CoT, boxed solution."""
    return [
        {
            "id": p.id,
            "source": SOURCE,
            "question": render_text(question_plan(p), "en"),
            "cot": render_text(solution_plan(p), "en"),
            "answer": str(p.answer),
            "solution": render_text(response_plan(p.answer), "en"),
        }
        for p in problems
    ]


def benchmark_records(problems: list[WordProblem]) -> list[dict[str, str]]:
    """Evaluation rows: id, English question, integer answer."""
    return [
        {
            "id": p.id,
            "question": render_text(question_plan(p), "en"),
            "answer": str(p.answer),
            "answer_type": "integer",
        }
        for p in problems
    ]


def bundled_records() -> dict[str, list[dict[str, str]]]:
    """What ``l2ray/data/lab_seeds.jsonl`` and ``lab_eval.jsonl`` hold: the first seeds and evaluation
    problems of the splits the study draws from (`write_bundled` writes them)."""
    return {
        "lab_seeds.jsonl": seed_records(make_problems("seeds", BUNDLED_SEEDS, 0)),
        "lab_eval.jsonl": benchmark_records(make_problems("eval", BUNDLED_EVAL, 0)),
    }


def write_bundled(folder: Path) -> list[Path]:
    """Write `bundled_records` into ``folder`` (``l2ray/data`` when shipping)."""
    return [write_jsonl(folder / name, records) for name, records in bundled_records().items()]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def paraphrase_rows(rows: list[TraceRow], count: Callable[[str], int]) -> list[TraceRow]:
    """The paraphrase baseline: every original of ``rows`` as it is, and for every other row an
    English rewording of its problem's solution (a style of `PARAPHRASE_STYLES`, a set of re-checked
    steps) whose assistant text is the closest in tokens (``count``) to that row's."""
    out: list[TraceRow] = []
    for row in sorted(rows, key=lambda r: r.id):
        if row.kind == "original":
            out.append(row)
            continue
        original = next(r for r in rows if r.seed_id == row.seed_id and r.kind == "original")
        problem = problem_from_question(original.question)
        target = count(row.assistant_text())
        best = min(
            _rewordings(original, problem, row.id),
            key=lambda candidate: (abs(count(candidate.assistant_text()) - target), candidate.id),
        )
        out.append(best)
    return out


def write_traces(folder: Path, rows: list[TraceRow]) -> Path:
    """One Parquet shard of trace rows (what `l2ray.train.mix.read_traces` reads)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([r.model_dump() for r in rows]).select(list(TRACE_COLUMNS))
    pq.write_table(table, folder / "part-00000.parquet")
    return folder


def _rewordings(original: TraceRow, problem: WordProblem, of: str) -> list[TraceRow]:
    """Candidate paraphrases: each style × re-checking 1..n steps (a seeded choice of steps)."""
    steps = list(range(1, len(problem.ops) + 1))
    rng = random.Random(of)
    candidates = []
    for style in PARAPHRASE_STYLES:
        for size in range(1, len(steps) + 1):
            checked = sorted(rng.sample(steps, size))
            cot = render_text(solution_plan(problem, checked=checked), style)
            candidates.append(
                original.model_copy(
                    update={
                        "id": stable_id("paraphrase", of, style, repr(checked)),
                        "cot": insert_tags([("en", cot)]),
                        "response": render_text(response_plan(problem.answer), style),
                        "checks": json.dumps({"paraphrase_of": of, "style": style, "checked": checked}),
                        "teacher": json.dumps({"model": "lab-paraphraser"}),
                        "usage": "{}",
                    }
                )
            )
    return candidates


__all__ = [
    "BUNDLED_EVAL",
    "BUNDLED_SEEDS",
    "PARAPHRASE_STYLES",
    "benchmark_records",
    "bundled_records",
    "paraphrase_rows",
    "seed_records",
    "write_bundled",
    "write_jsonl",
    "write_traces",
]
