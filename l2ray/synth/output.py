"""The synthesis output folder: Parquet shards, what a rerun may skip, the preview and the summary.

Layout under ``<run_dir>/synth``: ``traces/*.parquet`` (TraceRow columns), ``rejected/*.parquet``
(`REJECTED_COLUMNS`), ``failures.jsonl`` (malformed seeds), ``preview.jsonl``, ``summary.json``.
Every shard is written to a temporary name and renamed, so a killed run leaves whole shards only.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from l2ray.clock import utc_stamp
from l2ray.synth.assemble import REJECTED_COLUMNS, RETRYABLE_PREFIXES
from l2ray.traces import TRACE_COLUMNS

TRACE_SCHEMA = pa.schema(
    [(name, pa.list_(pa.string()) if name == "languages" else pa.string()) for name in TRACE_COLUMNS]
)
REJECTED_SCHEMA = pa.schema(
    [(name, pa.list_(pa.string()) if name == "languages" else pa.string()) for name in REJECTED_COLUMNS]
)


class SynthOutput:
    """Writes and reads one run's synthesis folder."""

    def __init__(self, run_dir: Path) -> None:
        self.root = run_dir / "synth"
        self.traces_dir = self.root / "traces"
        self.rejected_dir = self.root / "rejected"
        self.failures_path = self.root / "failures.jsonl"
        self.preview_path = self.root / "preview.jsonl"
        self.summary_path = self.root / "summary.json"
        for folder in (self.traces_dir, self.rejected_dir):
            folder.mkdir(parents=True, exist_ok=True)
        # Sortable by time (to the nanosecond: two runs in one second keep their order), unique per
        # process: later shards win when a rerun repeats a rejection.
        now = time.time_ns()
        self._stamp = f"{utc_stamp(now // 10**9)}.{now % 10**9:09d}-{os.getpid()}"
        self._seq = 0

    def finished_ids(self) -> set[str]:
        """Task ids a rerun skips: every trace, and rejections caused by content (not by requests)."""
        done = set(self.read("traces", ["id"])["id"].to_pylist())
        rejected = self.read("rejected", ["id", "reason"])
        for row_id, reason in zip(rejected["id"].to_pylist(), rejected["reason"].to_pylist(), strict=True):
            if not reason.startswith(RETRYABLE_PREFIXES):
                done.add(row_id)
        return done

    def write(self, kind: str, rows: list[dict[str, Any]]) -> Path | None:
        """Write ``rows`` as one new shard of ``traces`` or ``rejected`` (atomically)."""
        if not rows:
            return None
        folder, schema = self._where(kind)
        self._seq += 1
        path = folder / f"part-{self._stamp}-{self._seq:05d}.parquet"
        table = pa.Table.from_pylist([{c: row[c] for c in schema.names} for row in rows], schema=schema)
        _write_atomic(table, path)
        return path

    def read(self, kind: str, columns: list[str] | None = None) -> pa.Table:
        """All shards of ``traces`` or ``rejected`` as one table (empty with the schema when none)."""
        folder, schema = self._where(kind)
        shards = sorted(folder.glob("*.parquet"))
        if not shards:
            return schema.empty_table().select(columns or schema.names)
        return pa.concat_tables([pq.read_table(p, columns=columns, schema=schema) for p in shards])

    def consolidate_rejected(self) -> int:
        """Rewrite the rejected table as one shard: the latest verdict per task, none that later passed."""
        shards = sorted(self.rejected_dir.glob("*.parquet"))
        accepted = set(self.read("traces", ["id"])["id"].to_pylist())
        latest: dict[str, dict[str, Any]] = {}
        for shard in shards:
            for row in pq.read_table(shard, schema=REJECTED_SCHEMA).to_pylist():
                latest[row["id"]] = row
        rows = [row for row_id, row in latest.items() if row_id not in accepted]
        if shards:
            self.write("rejected", rows)
            for shard in shards:
                shard.unlink()
        return len(rows)

    def write_preview(self, limit: int) -> None:
        """The first ``limit`` traces of each kind as JSONL, for a quick look."""
        table = self.read("traces")
        taken: Counter[str] = Counter()
        with self.preview_path.open("w", encoding="utf-8") as fh:
            for row in table.to_pylist():
                if taken[row["kind"]] < limit:
                    taken[row["kind"]] += 1
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    def write_summary(self, summary: dict[str, Any]) -> None:
        tmp = self.summary_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, self.summary_path)

    def _where(self, kind: str) -> tuple[Path, pa.Schema]:
        if kind == "traces":
            return self.traces_dir, TRACE_SCHEMA
        if kind == "rejected":
            return self.rejected_dir, REJECTED_SCHEMA
        raise ValueError(f"unknown table {kind!r}; use traces or rejected")


def table_counts(traces: pa.Table, rejected: pa.Table) -> dict[str, Any]:
    """Rows by kind and by language (a mixed trace counts once for each language it uses), and
    rejected rows by reason and by kind."""
    by_language: dict[str, Counter[str]] = defaultdict(Counter)
    for kind, langs in zip(traces["kind"].to_pylist(), traces["languages"].to_pylist(), strict=True):
        for code in sorted(set(langs)):
            by_language[kind][code] += 1
    return {
        "rows": traces.num_rows,
        "rows_by_kind": dict(Counter(traces["kind"].to_pylist())),
        "rows_by_language": {kind: dict(counts) for kind, counts in by_language.items()},
        "rejected": rejected.num_rows,
        "rejected_by_reason": dict(Counter(rejected["reason"].to_pylist())),
        "rejected_by_kind": dict(Counter(rejected["kind"].to_pylist())),
    }


USAGE_KEYS = (
    "requests",
    "cache_hits",
    "prompt_tokens",
    "completion_tokens",
    "sent_prompt_tokens",
    "sent_completion_tokens",
    "cost_usd",
)


def usage_totals(rows: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Sum the ``usage`` JSON of the ``(kind, usage)`` rows a run produced: in total, per role
    (``by_role``) and per trace kind (``by_kind``). ``cost_usd`` counts paid requests only."""
    total: Counter[str] = Counter()
    by_role: dict[str, Counter[str]] = defaultdict(Counter)
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    for kind, usage in rows:
        data = json.loads(usage)
        flat = {key: data.get(key, 0) for key in USAGE_KEYS}
        total.update(flat)
        by_kind[kind].update(flat)
        for role, counts in (data.get("by_role") or {}).items():
            by_role[role].update({key: counts.get(key, 0) for key in USAGE_KEYS})
    return {
        **_usage_line(total),
        "by_role": {role: _usage_line(counts) for role, counts in by_role.items()},
        "by_kind": {kind: _usage_line(counts) for kind, counts in by_kind.items()},
    }


def _usage_line(counts: Counter[str]) -> dict[str, Any]:
    line: dict[str, Any] = {key: counts[key] for key in USAGE_KEYS}
    line["cost_usd"] = round(float(line["cost_usd"]), 6)
    return line


def _write_atomic(table: pa.Table, path: Path) -> None:
    """Write, fsync, rename, fsync the folder: after a crash or power loss the shard is whole or absent."""
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
