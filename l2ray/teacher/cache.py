"""Content-addressed response cache: a finished request is never sent again, across runs and crashes.

The cache is a folder of append-only JSONL shards. Every writer (one per actor process) appends to
its own shard, so several actors never interleave lines; every reader loads all shards. Each entry
is written and flushed to the OS as soon as its response arrives (a killed process loses nothing
that finished), and ``sync()`` fsyncs the shard in batches. A torn last line from a crash is skipped
on load.

Example:
    >>> import tempfile
    >>> cache = ResponseCache(tempfile.mkdtemp())
    >>> cache.put(CacheEntry("fp1", "m", "hello", 3, 1))
    >>> ResponseCache(cache.directory).get("fp1").text
    'hello'
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any


@dataclass(frozen=True)
class CacheEntry:
    """One finished request: its fingerprint, the model, the text and its token usage."""

    fingerprint: str
    model: str
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    finish_reason: str = "stop"  # "length": the reply hit max_tokens (entries before this field: "stop")
    served_model: str = ""  # the model id the endpoint's reply named (entries before this field: "")

    def to_json(self) -> str:
        # A literal dict, not dataclasses.asdict: this runs once per response on the hot path.
        fields = {
            "fingerprint": self.fingerprint,
            "model": self.model,
            "text": self.text,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "meta": self.meta,
            "finish_reason": self.finish_reason,
            "served_model": self.served_model,
        }
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))


class ResponseCache:
    """Fingerprint → `CacheEntry`, backed by JSONL shards in ``directory`` (created if missing).

    Args:
        directory: the cache folder, shared by all runs that may reuse responses.
        preload: entries that are served but never written (e.g. recorded responses).
    """

    def __init__(self, directory: str | os.PathLike[str], preload: Iterable[CacheEntry] = ()) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._entries: dict[str, CacheEntry] = {e.fingerprint: e for e in preload}
        self._fh: IO[str] | None = None
        self._unsynced = 0
        self.load()

    def load(self) -> int:
        """(Re)read every shard; returns the number of entries now known."""
        for shard in sorted(self.directory.glob("*.jsonl")):
            with shard.open(encoding="utf-8") as fh:
                for line in fh:
                    entry = _parse_line(line)
                    if entry is not None:
                        self._entries.setdefault(entry.fingerprint, entry)
        return len(self._entries)

    def get(self, fingerprint: str) -> CacheEntry | None:
        return self._entries.get(fingerprint)

    def __contains__(self, fingerprint: object) -> bool:
        return fingerprint in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, entry: CacheEntry) -> None:
        """Remember ``entry`` and append it to this writer's shard (flushed, not yet fsynced)."""
        if entry.fingerprint in self._entries:
            return
        self._entries[entry.fingerprint] = entry
        fh = self._shard()
        fh.write(entry.to_json() + "\n")
        fh.flush()
        self._unsynced += 1

    def sync(self) -> None:
        """fsync this writer's shard (called once per batch, not once per entry)."""
        if self._fh is not None and self._unsynced:
            os.fsync(self._fh.fileno())
            self._unsynced = 0

    def close(self) -> None:
        self.sync()
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _shard(self) -> IO[str]:
        if self._fh is None:
            name = f"shard-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            self._fh = (self.directory / name).open("a", encoding="utf-8")
        return self._fh


def _parse_line(line: str) -> CacheEntry | None:
    """An entry, or ``None`` for a blank or torn line (a crash mid-write leaves at most one)."""
    if not line.endswith("\n"):
        return None
    try:
        raw = json.loads(line)
        return CacheEntry(**raw)
    except (json.JSONDecodeError, TypeError):
        return None
