"""UTC timestamps in the two forms l2ray writes: ISO 8601 for records, a compact stamp for names.

Example:
    >>> utc_iso(0.0)
    '1970-01-01T00:00:00Z'
    >>> utc_stamp(0.0)
    '19700101T000000'
"""

from __future__ import annotations

import time

ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
STAMP_FORMAT = "%Y%m%dT%H%M%S"


def utc_iso(seconds: float | None = None) -> str:
    """``2026-12-02T08:00:00Z``: when something happened (summaries, state files, registry tags)."""
    return time.strftime(ISO_FORMAT, time.gmtime(seconds))


def utc_stamp(seconds: float | None = None) -> str:
    """``20261202T080000``: a sortable time for names (run names, shard files)."""
    return time.strftime(STAMP_FORMAT, time.gmtime(seconds))


__all__ = ["utc_iso", "utc_stamp"]
