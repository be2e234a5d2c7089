"""Stable content ids: the short hashes behind trace ids, fingerprints and cache keys.

Example:
    >>> stable_id("a", "b")
    'f04cdced9736a69d'
    >>> stable_id("a", "b") == stable_id("a", "b") != stable_id("ab")
    True
"""

from __future__ import annotations

import hashlib


def stable_id(*parts: str, length: int = 16) -> str:
    """A short, stable content hash (sha256) of the given strings, joined by a unit separator."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return digest[:length]


__all__ = ["stable_id"]
