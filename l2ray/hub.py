"""The Hugging Face Hub when it cannot be reached: one quick probe, then cache-only reads and one line.

Recipes name hub ids (``seeds.source: simplescaling/s1K``, ``student.model: Qwen/Qwen2.5-32B-Instruct``).
Where the hub cannot be reached (an air-gapped cluster, a CI machine), transformers, datasets and
huggingface_hub each retry for seconds to tens of seconds and end in a traceback. l2ray probes the hub
once per process instead (`reachable`: one TCP connection with a short timeout, none at all under
``HF_HUB_OFFLINE=1``); when it is out of reach, `use_cache_only` puts the libraries in their offline
mode for the rest of the process (and its subprocesses), so a read either comes from the local cache
at once or fails at once — which the caller turns into one `HubUnreachableError` naming what it
needed and the fix.

Example:
    >>> isinstance(reachable(timeout=0.1), bool)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import functools
import os
import socket
import sys
from urllib.parse import urlparse

from l2ray.errors import L2rayError

PROBE_TIMEOUT_S = 2.0
_probe_failed = False
"""Whether this process went cache-only because the probe failed (not because it was asked to)."""


class HubUnreachableError(L2rayError, ConnectionError):
    """Something a recipe names on the Hugging Face Hub is neither reachable nor in the local cache."""


def endpoint() -> str:
    """The hub's address (``HF_ENDPOINT``, else huggingface.co)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


@functools.cache
def reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the hub answers a TCP connection within ``timeout`` (``False`` under offline mode)."""
    if _offline():
        return False
    url = urlparse(endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def use_cache_only() -> bool:
    """When the hub is out of reach, switch this process's hub libraries to their local cache (and its
    children, through ``HF_HUB_OFFLINE``); ``True`` when reads are now cache-only."""
    global _probe_failed
    if reachable():
        return False
    _probe_failed = _probe_failed or not _offline()
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    # The libraries read the variable when imported: set their constants for those already loaded.
    for module, name in (
        ("huggingface_hub.constants", "HF_HUB_OFFLINE"),
        ("datasets.config", "HF_HUB_OFFLINE"),
    ):
        if module in sys.modules:
            setattr(sys.modules[module], name, True)
    return True


def unreachable(what: str, fix: str) -> HubUnreachableError:
    """The one-line error for ``what`` (e.g. ``seeds.source 'simplescaling/s1K'``) and its ``fix``."""
    if _offline() and not _probe_failed:
        why, skip = "offline mode is on (HF_HUB_OFFLINE=1)", ""
    else:
        why = f"the Hugging Face Hub ({endpoint()}) cannot be reached from here"
        skip = "; HF_HUB_OFFLINE=1 skips the hub altogether"
    return HubUnreachableError(f"{what}: {why} and it is not in the local cache; {fix}{skip}")


def _offline() -> bool:
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


__all__ = ["HubUnreachableError", "endpoint", "reachable", "unreachable", "use_cache_only"]
