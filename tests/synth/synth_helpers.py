"""Helpers shared by the synthesis tests (a module of its own: test files cannot import conftest)."""

from __future__ import annotations

import json
from pathlib import Path

from fake_teacher import FakeTeacher

API_KEY = "sk-l2ray-test-7f3a9c1e5b"


def seed_record(index: int, answer: int | None = None, marker: str = "") -> dict:
    """A seed whose question holds its answer as the last number (the fake teacher answers that)."""
    value = 10 + index
    return {
        "id": f"s{index}",
        "question": f"Let $a = {value}$. {marker}What is $a$?",
        "cot": (
            f"So $a = {value}$ directly from the statement. Wait, check again: $a$ was defined as ${value}$. "
            f"Hmm, yes, the value is ${value}$ and nothing else."
        ),
        "answer": str(answer if answer is not None else value),
    }


def write_seeds(path: Path, records: list[dict], extra_lines: tuple[str, ...] = ()) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")
        for line in extra_lines:
            fh.write(line + "\n")
    return path


def teacher_section(server: FakeTeacher, **extra) -> dict:
    """A teacher section for ``server``: its client timeout and a short backoff, so faults cost
    little test time."""
    return {
        "base_url": server.base_url,
        "model": "fake-teacher",
        "read_timeout_s": server.client_timeout_s,
        "backoff_base_s": 0.02,
        "backoff_max_s": 0.2,
        "max_retries": 3,
        "concurrency": 8,
        **extra,
    }
