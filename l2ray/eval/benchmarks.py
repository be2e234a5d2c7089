"""Benchmarks: AIME24, MATH500, GPQA-Diamond, the bundled mini set, or any JSONL/Parquet/HF set.

Every benchmark normalises to `Problem` rows and states its answer type (``math``, ``integer`` or
``letter``). GPQA's four answers are shuffled into letters with a seed per row, so the same seed
gives the same letters whatever the order or limit.

Example:
    >>> data = load_benchmark("mini", limit=3)
    >>> data.name, len(data.problems), data.problems[0].answer_type
    ('mini', 3, 'math')
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from l2ray.data.seeds import bundled_file
from l2ray.errors import L2rayError
from l2ray.grading import AnswerType, validate_gold
from l2ray.hashing import stable_id
from l2ray.recipe import BenchmarkSpec


@dataclass(frozen=True)
class Problem:
    """One question with its gold answer."""

    benchmark: str
    id: str
    question: str
    answer: str
    answer_type: AnswerType

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class BenchmarkData:
    """The problems of one benchmark and what identifies them (for the evaluation fingerprint)."""

    name: str
    problems: list[Problem]
    source: str
    subset: str | None
    split: str | None
    revision: str | None
    answer_type: str
    content_hash: str = field(default="")

    def identity(self) -> dict[str, Any]:
        """Dataset id, subset, revision, split, answer type, count and a hash of the problems."""
        return {
            "name": self.name,
            "source": self.source,
            "subset": self.subset,
            "split": self.split,
            "revision": self.revision,
            "answer_type": self.answer_type,
            "problems": len(self.problems),
            "content_hash": self.content_hash,
        }


class BenchmarkError(L2rayError, ValueError):
    """An unknown benchmark, an unreadable source or a row without a needed field."""


@dataclass(frozen=True)
class _Registered:
    source: str
    split: str | None
    answer_type: AnswerType
    question_field: str
    answer_field: str
    id_field: str | None
    subset: str | None = None
    answer_type_field: str | None = None
    builder: Callable[[dict[str, Any], int], tuple[str, str]] | None = None


def _gpqa_row(record: dict[str, Any], seed: int) -> tuple[str, str]:
    """Question with the four answers shuffled into ``A) …`` lines, and the correct letter."""
    fields = ["Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]
    missing = [f for f in ["Question", *fields] if not str(record.get(f) or "").strip()]
    if missing:
        raise KeyError(missing[0])
    choices = [str(record[f]).strip() for f in fields]
    order = list(range(4))
    random.Random(f"{seed}:{record.get('Record ID') or record['Question']}").shuffle(order)
    lines = [f"{letter}) {choices[i]}" for letter, i in zip("ABCD", order, strict=True)]
    gold = "ABCD"[order.index(0)]
    return str(record["Question"]).strip() + "\n" + "\n".join(lines), gold


REGISTERED: dict[str, _Registered] = {
    "mini": _Registered(
        "bundled:mini_eval.jsonl", None, "math", "question", "answer", "id", answer_type_field="answer_type"
    ),
    "aime24": _Registered("HuggingFaceH4/aime_2024", "train", "integer", "problem", "answer", "id"),
    "math500": _Registered("HuggingFaceH4/MATH-500", "test", "math", "problem", "answer", "unique_id"),
    "gpqa_diamond": _Registered(
        "Idavidrein/gpqa",
        "train",
        "letter",
        "Question",
        "Correct Answer",
        "Record ID",
        subset="gpqa_diamond",
        builder=_gpqa_row,
    ),
    "lab": _Registered("bundled:lab_eval.jsonl", None, "integer", "question", "answer", "id"),
}
"""Benchmarks known by name, with their real sources and field maps."""


def resolve_spec(benchmark: str | BenchmarkSpec) -> BenchmarkSpec:
    """A spec for a name, a path, or a spec; unknown names raise `BenchmarkError` listing known ones."""
    if isinstance(benchmark, BenchmarkSpec):
        return benchmark
    if benchmark in REGISTERED:
        return BenchmarkSpec(name=benchmark)
    if benchmark.endswith((".jsonl", ".parquet")) or Path(benchmark).exists():
        return BenchmarkSpec(name=Path(benchmark).stem.replace(" ", "_")[:64] or "data", source=benchmark)
    raise BenchmarkError(
        f"unknown benchmark {benchmark!r}; registered: {', '.join(REGISTERED)}. For your own data give a "
        ".jsonl/.parquet path or {name: ..., source: ..., answer_field: ...} in eval.benchmarks"
    )


def load_benchmark(benchmark: str | BenchmarkSpec, limit: int | None = None, seed: int = 0) -> BenchmarkData:
    """Load and normalise one benchmark (first ``limit`` problems)."""
    spec = resolve_spec(benchmark)
    known = REGISTERED.get(spec.name)
    source = spec.source or (known.source if known else None)
    if source is None:
        raise BenchmarkError(f"benchmark {spec.name!r}: no source; set source to a file, folder or HF id")
    split = spec.split or (known.split if known else None)
    subset = spec.subset or (known.subset if known else None)
    default_type = spec.answer_type or (known.answer_type if known else "math")
    question_field = spec.question_field or (known.question_field if known else "question")
    answer_field = spec.answer_field or (known.answer_field if known else "answer")
    id_field = spec.id_field or (known.id_field if known else "id")
    type_field = spec.answer_type_field or (known.answer_type_field if known else None)
    builder = known.builder if known and not (spec.question_field or spec.answer_field) else None

    problems: list[Problem] = []
    for index, record in enumerate(_read_records(spec.name, source, subset, split, spec.revision), start=1):
        where = f"benchmark {spec.name!r} ({source}), row {index}"
        try:
            if builder is not None:
                question, answer = builder(record, seed)
            else:
                question, answer = _field(record, question_field), _field(record, answer_field)
        except KeyError as exc:
            field_name = exc.args[0]
            raise BenchmarkError(
                f"{where}: field {field_name!r} is missing or empty; fields there: {sorted(record)}. "
                f"Set question_field/answer_field in the benchmark spec to the right names."
            ) from None
        answer_type = str(record.get(type_field) or default_type) if type_field else default_type
        try:
            validate_gold(answer, answer_type)  # type: ignore[arg-type]
        except ValueError as exc:
            raise BenchmarkError(f"{where}, field {answer_field!r}: {exc}") from None
        problem_id = str(record.get(id_field) or "") if id_field else ""
        problems.append(
            Problem(spec.name, problem_id or f"{spec.name}-{index}", question, answer, answer_type)
        )  # type: ignore[arg-type]
        if limit is not None and len(problems) >= limit:
            break
    if not problems:
        raise BenchmarkError(f"benchmark {spec.name!r} ({source}): no rows")
    types = sorted({p.answer_type for p in problems})
    content = stable_id(*(f"{p.id}\x1e{p.question}\x1e{p.answer}\x1e{p.answer_type}" for p in problems))
    return BenchmarkData(spec.name, problems, source, subset, split, spec.revision, "+".join(types), content)


# ---------------------------------------------------------------------------------------------------


def _field(record: dict[str, Any], name: str) -> str:
    value = record.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise KeyError(name)
    return str(value).strip()


def _read_records(
    name: str, source: str, subset: str | None, split: str | None, revision: str | None
) -> Iterator[dict[str, Any]]:
    if source.startswith("bundled:"):
        yield from _read_jsonl(name, bundled_file(source.removeprefix("bundled:")))
        return
    path = Path(source).expanduser()
    if path.suffix == ".jsonl":
        yield from _read_jsonl(name, path)
    elif path.suffix == ".parquet":
        yield from _read_parquet(name, path)
    elif path.is_dir():
        yield from _read_saved(name, path, split)
    elif path.exists() or source.startswith((".", "/", "~")):
        raise BenchmarkError(
            f"benchmark {name!r}: {source} is not a .jsonl/.parquet file or a dataset folder"
        )
    else:
        yield from _read_hub(name, source, subset, split, revision)


def _read_jsonl(name: str, path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        raise BenchmarkError(f"benchmark {name!r}: {path} does not exist")
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BenchmarkError(
                    f"benchmark {name!r}: {path}, line {line_no}: not JSON ({exc})"
                ) from None
            if not isinstance(record, dict):
                raise BenchmarkError(f"benchmark {name!r}: {path}, line {line_no}: not a JSON object")
            yield record


def _read_parquet(name: str, path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise BenchmarkError(f"benchmark {name!r}: {path} does not exist")
    yield from pq.read_table(path).to_pylist()


def _read_saved(name: str, path: Path, split: str | None) -> Iterator[dict[str, Any]]:
    from datasets import DatasetDict, load_from_disk

    try:
        data = load_from_disk(str(path))
    except FileNotFoundError as exc:
        raise BenchmarkError(
            f"benchmark {name!r}: {path} is not a datasets save_to_disk folder: {exc}"
        ) from None
    if isinstance(data, DatasetDict):
        chosen = split if split in data else (next(iter(data)) if len(data) == 1 else None)
        if chosen is None:
            raise BenchmarkError(
                f"benchmark {name!r}: {path} has splits {list(data)}; set split to one of them"
            )
        data = data[chosen]
    yield from data


def _read_hub(
    name: str, source: str, subset: str | None, split: str | None, revision: str | None
) -> Iterator[dict[str, Any]]:
    from datasets import load_dataset

    try:
        data = load_dataset(source, subset, split=split or "train", revision=revision)
    except Exception as exc:  # datasets raises many types (offline, gated, missing split)
        raise BenchmarkError(
            f"benchmark {name!r}: loading {source}"
            f"{f' ({subset})' if subset else ''} split {split or 'train'} failed: {exc}. "
            "Offline? Save it with Dataset.save_to_disk and set the benchmark's source to that folder."
        ) from None
    yield from data


__all__ = ["REGISTERED", "BenchmarkData", "BenchmarkError", "Problem", "load_benchmark", "resolve_spec"]
