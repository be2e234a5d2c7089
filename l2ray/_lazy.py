"""Package exports that import on first use, so ``import l2ray.<stage>`` never pulls in Ray or torch.

Example:
    >>> getattr_ = lazy_exports("l2ray", {"stable_id": "hashing"})
    >>> getattr_("stable_id")("a")
    'ca978112ca1bbdca'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``package.<exports[name]>`` when ``name`` is first read."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__


__all__ = ["lazy_exports"]
