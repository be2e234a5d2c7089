"""Folders built once in the student cache (``$L2RAY_CACHE``), safely under concurrency.

Several processes resolve the same student at once (serve replicas, evaluation actors, training
workers): a folder is assembled in a private staging folder and renamed into place only when whole,
marked ready, so no process ever sees or deletes another's half-written copy.

Example:
    >>> target = build_once(Path("/tmp/l2ray-doc/folder"), lambda staging: (staging / "x").write_text("1"))
    >>> (target / "x").read_text()
    '1'
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

READY_MARKER = ".l2ray-ready"


def build_once(target: Path, build: Callable[[Path], None], note: str = "") -> Path:
    """``target``, built by ``build(staging)`` unless a ready copy exists; ``note`` goes in the marker."""
    if (target / READY_MARKER).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        build(staging)
        (staging / READY_MARKER).write_text(note + "\n")
        try:
            staging.rename(target)
        except OSError:
            if not (target / READY_MARKER).exists():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


__all__ = ["READY_MARKER", "build_once"]
