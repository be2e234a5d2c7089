"""The capture of a run's output: what the process and the processes it starts write, into a log file.

`captured_output` sends everything the process writes — Ray's driver logs, the worker output Ray
forwards, MLflow, tqdm bars, C++ logs on fd 2, Python logging — to the run's log file, and hands each
warning or error line (`classify`) to a callback: the run's display (`l2ray.console`), which prints it
once. Warnings every healthy run produces (`EXPECTED`) stay in the log.

Example:
    >>> classify("(TrainController pid=69) [2026-12-02 14:44:21,082 E 69 70] core_worker.cc:2465: lost")
    ('error', 'core_worker.cc:2465: lost (TrainController)')
    >>> classify("2026-12-02 14:43:34,820\\tINFO worker.py:2029 -- Started a local Ray instance.") is None
    True
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

EXPECTED = (
    # Ray Train's own actors (PreemptionWatcher, MapWorker) on every run: ray-project/ray#53727.
    "has constructor arguments in the object store and max_restarts > 0",
    # Ray Data says so whenever synthesis turns its bars off to draw its own.
    "Progress bars disabled. To enable, set",
    # Ray Train's DatasetManager uses its own deprecated option.
    "`ExecutionOptions.exclude_resources` is deprecated",
    # mlflow.transformers about any model not from the Hugging Face hub (ours are built locally).
    "The model card could not be retrieved from the hub",
    "Unable to find license information for this model",
)
"""Warnings every healthy run produces, about nothing the user can change: they stay in the log only."""


@contextmanager
def captured_output(log_file: Path, on_note: Callable[[str, str], None]) -> Iterator[None]:
    """Send what this process and the processes it starts write (fd 1 and 2, `sys.stdout`/`sys.stderr`,
    Python logging) to ``log_file``; call ``on_note(level, message)`` for each warning or error line."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = _redirect_fds(fd)
    watcher = _LogWatcher(log_file, on_note)
    handlers = [_log_handler(fd), _NoteHandler(on_note)]
    root = logging.getLogger()
    old_level = root.level
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    sink = _PlainSink(fd)
    try:
        with redirect_stdout(sink), redirect_stderr(sink):
            yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
        root.setLevel(old_level)
        _restore_fds(saved)
        # ``fd`` stays open: what was handed the redirected streams during the run (Ray's log handler,
        # a tqdm bar closed at exit) may still write to them, and that keeps landing in the log.
        watcher.stop()


def classify(line: str) -> tuple[str, str] | None:
    """``(level, message)`` for a warning or error line of Ray, Python logging, `warnings` or a
    traceback's last line; None for anything else. The message names the Ray process it came from."""
    text = _ANSI.sub("", line).strip()
    prefix = _RAY_PREFIX.match(text)
    source = prefix.group("source") if prefix else ""
    text = text[prefix.end() :] if prefix else text
    found: tuple[str, str] | None = None
    if match := _RAY_CPP.match(text) or _PY_LOG.match(text):
        level = _LEVELS.get(match.group("level"))
        found = (level, text[match.end() :]) if level else None
    elif match := _PY_WARNING.match(text):
        found = ("warning", match.group("message"))
    elif _EXCEPTION.match(text):
        found = ("error", text)
    if found is None or not found[1].strip() or any(text in found[1] for text in EXPECTED):
        return None
    return found[0], found[1].strip() + (f" ({source})" if source else "")


_RAY_PREFIX = re.compile(r"^\((?P<source>[^)]*?)(?: pid=\d+)?(?:, ip=[\d.]+)?\)\s*")
_RAY_CPP = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+ (?P<level>[IWEF]) \d+ \d+\]\s*")
_PY_LOG = re.compile(
    r"^\d{4}[-/]\d\d[-/]\d\d[ T][\d:,.]+\s+(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+(?:\S+ -- |\S+: )?"
)
_PY_WARNING = re.compile(r"^\S+:\d+: (?P<message>\w*Warning: .*)")
_EXCEPTION = re.compile(r"^(?:[\w.]+\.)?\w+(?:Error|Exception): .+")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_LEVELS = {
    "W": "warning",
    "E": "error",
    "F": "error",
    "WARNING": "warning",
    "ERROR": "error",
    "CRITICAL": "error",
}


class _LogWatcher:
    """Reads the log file as it grows (a thread) and hands each warning/error line to ``on_note``."""

    def __init__(self, path: Path, on_note: Callable[[str, str], None]) -> None:
        self._file = path.open("r", encoding="utf-8", errors="replace")
        self._file.seek(0, io.SEEK_END)
        self._on_note = on_note
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="l2ray-log-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()
        self._read()  # what was written after the last poll
        self._file.close()

    def _run(self) -> None:
        while not self._stopped.wait(0.2):
            self._read()

    def _read(self) -> None:
        for line in self._file.readlines():
            for part in line.split("\r"):  # tqdm-style bars redraw with carriage returns
                if found := classify(part):
                    self._on_note(*found)


class _PlainSink(io.TextIOBase):
    """`sys.stdout`/`sys.stderr` during a captured run: text into the log without colour codes (Ray
    colours the process prefix of every forwarded worker line, terminal or not)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, text: str) -> int:
        os.write(self._fd, _ANSI.sub("", text).encode("utf-8", "replace"))
        return len(text)

    def fileno(self) -> int:
        return self._fd

    def writable(self) -> bool:
        return True


class _NoteHandler(logging.Handler):
    """Python warnings and errors straight to the display, in order with the stage lines (the log
    watcher would see them a poll later; the display prints each message once either way)."""

    def __init__(self, on_note: Callable[[str, str], None]) -> None:
        super().__init__(logging.WARNING)
        self._on_note = on_note

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not any(text in message for text in EXPECTED):
            self._on_note("error" if record.levelno >= logging.ERROR else "warning", message)


def _log_handler(fd: int) -> logging.Handler:
    """Python logging into the log file (l2ray's own and any library's that propagates to the root)."""
    handler = logging.StreamHandler(_PlainSink(fd))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    return handler


def _redirect_fds(fd: int) -> list[tuple[int, int]]:
    saved = []
    for target in (1, 2):
        saved.append((target, os.dup(target)))
        os.dup2(fd, target)
    return saved


def _restore_fds(saved: list[tuple[int, int]]) -> None:
    for target, copy in saved:
        os.dup2(copy, target)
        os.close(copy)


__all__ = ["EXPECTED", "captured_output", "classify"]
