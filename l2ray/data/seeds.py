"""Seed loaders: JSONL, Parquet and Hugging Face datasets normalised to `SeedRow`.

Field maps cover l2ray's own format and the long-CoT sets the paper family uses: s1K
(``question``, ``thinking_trajectories``, ``attempt``/``solution``), Bespoke-Stratos
(``conversations``) and LIMO (``question``, ``solution``, ``answer``).

Example:
    >>> result = load_seeds(SeedsConfig())            # the bundled seed set
    >>> len(result.rows) >= 8, result.failures
    (True, [])
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from l2ray.errors import L2rayError
from l2ray.hashing import stable_id
from l2ray.recipe import SeedsConfig
from l2ray.text.boxed import last_boxed

BUNDLED = "bundled"


class SeedRow(BaseModel):
    """One English long-CoT sample: the unit synthesis expands into multilingual traces."""

    id: str = Field(min_length=1)
    source: str
    question: str = Field(min_length=1)
    cot: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    solution: str = ""
    domain: str = "math"
    meta: dict[str, Any] = Field(default_factory=dict)

    def final_response(self) -> str:
        r"""The text after ``</think>``: the seed's solution, or a sentence with ``\boxed{answer}``."""
        return self.solution or f"The final answer is $\\boxed{{{self.answer}}}$."


@dataclass(frozen=True)
class SeedFailure:
    """A seed row that could not be used, with enough detail to find and fix it."""

    source: str
    row: int
    field: str
    reason: str
    raw: str

    def describe(self) -> str:
        return f"{self.source}, row {self.row}, field {self.field!r}: {self.reason}"


@dataclass
class SeedLoadResult:
    """The valid rows and every failure (with ``on_error: skip``); nothing is dropped silently."""

    source: str
    rows: list[SeedRow] = field(default_factory=list)
    failures: list[SeedFailure] = field(default_factory=list)

    def write_failures(self, path: str | Path) -> Path:
        """Write the failures as JSONL (an empty file when there are none) and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as fh:
            for failure in self.failures:
                fh.write(json.dumps(asdict(failure), ensure_ascii=False) + "\n")
        return path


class SeedError(L2rayError, ValueError):
    """A malformed seed row with ``on_error: raise``; the message names source, row, field and fix."""


def load_seeds(config: SeedsConfig | None = None) -> SeedLoadResult:
    """Load, normalise and validate seeds as the recipe's ``seeds`` section says."""
    config = config or SeedsConfig()
    source = _describe_source(config.source)
    result = SeedLoadResult(source=source)
    seen: set[str] = set()
    for index, record in _read_records(config):
        try:
            if isinstance(record, _Unreadable):
                raise _RowProblem("<row>", record.reason)
            mapper = _pick_field_map(config.field_map, record)
            try:
                row = mapper(record, source)
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                # A value of an unexpected shape (a list where text belongs, a field that fails
                # SeedRow's validation): this row's problem, not the load's.
                raise _RowProblem("<row>", f"{type(exc).__name__}: {str(exc)[:200]}") from None
            if row.id in seen:
                raise _RowProblem("id", f"duplicate id {row.id!r}")
        except _RowProblem as problem:
            failure = SeedFailure(source, index, problem.field, problem.reason, _preview(record))
            if config.on_error == "raise":
                raise SeedError(
                    f"{failure.describe()}. Fix the row, or set seeds.on_error=skip to record it in "
                    "the failures file and continue."
                ) from None
            result.failures.append(failure)
            continue
        seen.add(row.id)
        result.rows.append(row)
        if config.limit is not None and len(result.rows) >= config.limit:
            break
    return result


def bundled_file(name: str) -> Path:
    """Path of a data file shipped inside the package (``seeds.jsonl``, ``mini_eval.jsonl``, …)."""
    return Path(str(resources.files("l2ray.data").joinpath(name)))


# --- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unreadable:
    reason: str
    text: str


class _RowProblem(Exception):
    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(reason)
        self.field, self.reason = field_name, reason


def _describe_source(source: str) -> str:
    """The file behind ``bundled`` (the seed set) or ``bundled:NAME`` (another shipped file)."""
    if source == BUNDLED:
        return str(bundled_file("seeds.jsonl"))
    if source.startswith(f"{BUNDLED}:"):
        return str(bundled_file(source.split(":", 1)[1]))
    return source


def _read_records(config: SeedsConfig) -> Iterator[tuple[int, dict[str, Any] | _Unreadable]]:
    source = _describe_source(config.source)
    fmt = config.format if config.format != "auto" else _guess_format(source)
    if fmt == "jsonl":
        yield from _read_jsonl(Path(source))
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        yield from enumerate(pq.read_table(source).to_pylist(), start=1)
    else:
        yield from enumerate(_read_hf(source, config), start=1)


def _guess_format(source: str) -> str:
    suffix = Path(source).suffix.lower()
    if suffix in {".jsonl", ".json"}:
        return "jsonl"
    if suffix == ".parquet":
        return "parquet"
    return "hf"


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | _Unreadable]]:
    if not path.exists():
        raise SeedError(
            f"seeds file {path} does not exist; set seeds.source to a JSONL/Parquet file, "
            "a saved dataset folder or a Hugging Face id"
        )
    with path.open("rb") as fh:  # decoded per line: one bad byte costs its row, not the file
        for line_no, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield (
                    line_no,
                    _Unreadable(
                        f"not UTF-8 text (bad byte at offset {exc.start})", raw.decode("utf-8", "replace")
                    ),
                )
                continue
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                yield line_no, _Unreadable(f"not valid JSON ({exc.msg} at column {exc.colno})", line)
                continue
            yield line_no, value if isinstance(value, dict) else _Unreadable("not a JSON object", line)


def _read_hf(source: str, config: SeedsConfig) -> Iterator[dict[str, Any]]:
    import datasets

    if Path(source).is_dir():
        loaded = datasets.load_from_disk(source)
        if isinstance(loaded, datasets.DatasetDict):
            if config.split not in loaded:
                raise SeedError(
                    f"saved dataset {source} has splits {list(loaded)}, not {config.split!r}; set seeds.split"
                )
            loaded = loaded[config.split]
    else:
        loaded = _load_hub_dataset(source, config)
    yield from loaded


def _load_hub_dataset(source: str, config: SeedsConfig) -> Any:
    """``datasets.load_dataset`` of a hub id, from the local cache at once when the hub is out of reach."""
    import datasets

    from l2ray.hub import unreachable, use_cache_only

    offline = use_cache_only()
    try:
        return datasets.load_dataset(source, split=config.split, revision=config.revision)
    except ConnectionError as exc:  # what datasets raises when neither the hub nor the cache has it
        if not offline and "Couldn't reach" not in str(exc):
            raise
        raise unreachable(
            f"seeds.source {source!r}",
            "download it where the hub can be reached (datasets.load_dataset(...).save_to_disk(FOLDER)) "
            "and point seeds.source at that folder, or at a JSONL/Parquet copy",
        ) from None


# --- field maps ----------------------------------------------------------------------------------

FieldMap = Callable[[dict[str, Any], str], SeedRow]

_BESPOKE_THOUGHT = re.compile(r"<\|begin_of_thought\|>(.*?)<\|end_of_thought\|>", re.S)
_BESPOKE_SOLUTION = re.compile(r"<\|begin_of_solution\|>(.*?)<\|end_of_solution\|>", re.S)


def _pick_field_map(name: str | dict[str, str], record: dict[str, Any]) -> FieldMap:
    if isinstance(name, dict):
        return _custom_map(name)
    if name != "auto":
        return FIELD_MAPS[name]
    if "conversations" in record:
        return FIELD_MAPS["bespoke"]
    if "thinking_trajectories" in record:
        return FIELD_MAPS["s1k"]
    if "cot" in record:
        return FIELD_MAPS["l2ray"]
    if {"question", "solution", "answer"} <= record.keys():
        return FIELD_MAPS["limo"]
    raise _RowProblem(
        "<row>",
        f"cannot tell the format from its fields {sorted(record)}; set seeds.field_map "
        "to one of l2ray, s1k, bespoke, limo or a mapping {our_field: their_field}",
    )


def _text(record: dict[str, Any], key: str, number_ok: bool = False) -> str:
    value = record.get(key)
    if isinstance(value, list):  # s1K keeps trajectories as a list; the first is the kept one
        value = value[0] if value else None
    if value is None:
        raise _RowProblem(key, "missing")
    if number_ok and isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _RowProblem(key, f"expected text, got {type(value).__name__}")
    if not value.strip():
        raise _RowProblem(key, "empty")
    return value


def _build(record: dict[str, Any], source: str, **fields: Any) -> SeedRow:
    row_id = str(record.get("id") or record.get("_id") or stable_id(fields["question"]))
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    return SeedRow(
        id=row_id,
        source=str(record.get("source") or source),
        domain=str(record.get("domain") or "math"),
        meta=meta,
        **fields,
    )


def _l2ray_map(record: dict[str, Any], source: str) -> SeedRow:
    solution = record.get("solution") or ""
    if not isinstance(solution, str):
        raise _RowProblem("solution", f"expected text, got {type(solution).__name__}")
    return _build(
        record,
        source,
        question=_text(record, "question"),
        cot=_text(record, "cot"),
        answer=_text(record, "answer", number_ok=True).strip(),
        solution=solution,
    )


def _s1k_map(record: dict[str, Any], source: str) -> SeedRow:
    gold = _text(record, "solution")
    attempt = record.get("attempt") if isinstance(record.get("attempt"), str) else ""
    answer = last_boxed(gold) or (gold.strip() if len(gold) <= 200 else last_boxed(attempt))
    if not answer:
        raise _RowProblem("solution", "no \\boxed{} answer in solution or attempt and solution is long")
    return _build(
        record,
        source,
        question=_text(record, "question"),
        cot=_text(record, "thinking_trajectories"),
        answer=answer,
        solution=attempt,
    )


def _bespoke_map(record: dict[str, Any], source: str) -> SeedRow:
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise _RowProblem("conversations", "missing or not a list of turns")
    by_role = {
        str(t.get("from") or t.get("role")): t.get("value") or t.get("content")
        for t in turns
        if isinstance(t, dict)
    }
    question = by_role.get("user") or by_role.get("human")
    reply = by_role.get("assistant") or by_role.get("gpt")
    if not question or not reply:
        raise _RowProblem("conversations", "needs a user turn and an assistant turn")
    thought, solution = _BESPOKE_THOUGHT.search(reply), _BESPOKE_SOLUTION.search(reply)
    if not thought or not solution:
        raise _RowProblem("conversations", "assistant turn lacks <|begin_of_thought|>/<|begin_of_solution|>")
    answer = last_boxed(solution.group(1))
    if not answer:
        raise _RowProblem("conversations", "the solution has no \\boxed{} answer")
    return _build(
        record,
        source,
        question=question,
        cot=thought.group(1).strip(),
        answer=answer,
        solution=solution.group(1).strip(),
    )


def _limo_map(record: dict[str, Any], source: str) -> SeedRow:
    return _build(
        record,
        source,
        question=_text(record, "question"),
        cot=_text(record, "solution"),
        answer=_text(record, "answer", number_ok=True).strip(),
    )


def _custom_map(mapping: dict[str, str]) -> FieldMap:
    def apply(record: dict[str, Any], source: str) -> SeedRow:
        renamed = {ours: record.get(theirs) for ours, theirs in mapping.items()}
        return _l2ray_map({**record, **renamed}, source)

    return apply


FIELD_MAPS: dict[str, FieldMap] = {
    "l2ray": _l2ray_map,
    "s1k": _s1k_map,
    "bespoke": _bespoke_map,
    "limo": _limo_map,
}


def _preview(record: dict[str, Any] | _Unreadable, limit: int = 300) -> str:
    text = (
        record.text
        if isinstance(record, _Unreadable)
        else json.dumps(record, ensure_ascii=False, default=str)
    )
    return text[:limit]
