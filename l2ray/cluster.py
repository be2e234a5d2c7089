"""Joining a Ray cluster: one rule for every stage that distributes work.

A process that is already connected stays on its cluster; otherwise ``ray.init()`` joins the cluster
``RAY_ADDRESS`` names (a ``ray job``'s own cluster) or starts a local one. An address where nothing
answers fails at once, in one line, instead of after Ray's minutes of connection retries.

Example:
    >>> check_address("auto"), check_address("local")
    (None, None)
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

from l2ray.errors import L2rayError

PROBE_TIMEOUT_S = 3.0


class RayClusterNotFoundError(L2rayError, ConnectionError):
    """No Ray cluster answers at the address l2ray was given."""


def ensure_ray(**init_options: Any) -> None:
    """Connect to Ray unless this process already is (``RAY_ADDRESS`` is honoured); ``init_options``
    go to ``ray.init`` (e.g. ``include_dashboard=False``)."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or None
    check_address(address)
    try:
        ray.init(**init_options)
    except ConnectionError as exc:  # e.g. RAY_ADDRESS=auto with no cluster running
        raise RayClusterNotFoundError(_not_found(address, str(exc).splitlines()[0])) from None


def iter_rows(ds: Any) -> Iterator[dict[str, Any]]:
    """``ds.iter_rows()``, where an `L2rayError` raised by one of the dataset's tasks or actors (a
    dead engine, a sample that cannot fit) reaches the driver as itself: not as Ray Data's generic
    ``UserCodeException``, which drops the cause, nor inside Ray's remote traceback."""
    ds.context.raise_original_map_exception = True
    try:
        yield from ds.iter_rows()
    except Exception as exc:
        cause = l2ray_cause(exc)
        if cause is None:
            raise
        raise cause from None


def l2ray_cause(exc: BaseException) -> L2rayError | None:
    """The `L2rayError` a Ray task or actor raised, out of the error Ray hands the driver, else
    ``None`` (Ray wraps the remote error and keeps it as ``cause``)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, L2rayError):
        return cause
    return exc if isinstance(exc, L2rayError) and cause is None else None


def check_address(address: str | None) -> None:
    """Raise `RayClusterNotFoundError` unless something listens at ``address`` (``host:port``,
    ``ray://host:port``); ``None``, ``local`` and ``auto`` are left to ``ray.init``."""
    if not address or address in ("local", "auto"):
        return
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    if parsed.hostname is None or parsed.port is None:
        raise RayClusterNotFoundError(
            f"RAY_ADDRESS={address!r} is not host:port or ray://host:port; fix it, or unset RAY_ADDRESS "
            "to let l2ray start a local Ray cluster"
        )
    try:
        socket.create_connection((parsed.hostname, parsed.port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise RayClusterNotFoundError(_not_found(address, exc.strerror or type(exc).__name__)) from None


def _not_found(address: str | None, reason: str) -> str:
    return (
        f"no Ray cluster at RAY_ADDRESS={address} ({reason}); start one there (`ray start --head`), "
        "point RAY_ADDRESS at a running cluster, or unset it to let l2ray start a local one"
    )


__all__ = ["RayClusterNotFoundError", "check_address", "ensure_ray", "iter_rows", "l2ray_cause"]
