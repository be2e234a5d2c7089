"""The one base of l2ray's errors: something the user can fix (a recipe, a file, a row, a server).

Every error l2ray raises for bad input or an unusable environment derives from `L2rayError`; its
message names what is wrong (the file, the row, the field) and the fix. The CLI catches this one
base, prints the message on one line and exits with status 2; anything else is a bug and keeps its
traceback.

Example:
    >>> issubclass(L2rayError, Exception)
    True
    >>> str(L2rayError("recipe x.yaml: train.lr: got -1 — must be > 0"))
    'recipe x.yaml: train.lr: got -1 — must be > 0'
"""

from __future__ import annotations


class L2rayError(Exception):
    """Bad input or an unusable environment, with a message that says what to fix."""


__all__ = ["L2rayError"]
