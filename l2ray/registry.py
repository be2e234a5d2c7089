"""The model registry's one write that decides what is served: moving an alias, one writer at a time.

MLflow has no compare-and-set on aliases and no transactions over REST, so two promotions finishing
together would each read the champion, decide, and move the alias — the later writer wins whatever
its gate compared against. The one atomic operation the registry offers is creating a registered
model (its name is unique in the store: PostgreSQL or sqlite refuse the second insert), so
`alias_lock` holds a lock *model*, ``<NAME>.l2ray-lock``, while a writer reads the alias and moves it.
The lock names its holder and a lease; a lock whose lease ran out (its holder died) is broken.

Example:
    >>> with alias_lock(client, "demo"):  # doctest: +SKIP
    ...     if alias_version(client, "demo", "champion") == "3":
    ...         client.set_registered_model_alias("demo", "champion", "4")
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from l2ray.clock import utc_iso
from l2ray.errors import L2rayError
from l2ray.mlflow_store import RegistryPermissionError, current_user, permission_denied

LOCK_SUFFIX = ".l2ray-lock"
HOLDER_TAG = "l2ray.lock.holder"
EXPIRES_TAG = "l2ray.lock.expires_unix"
LEASE_S = 60.0
"""How long a lock holds without its holder: far beyond the few REST calls it guards."""
WAIT_S = 180.0
"""How long a writer waits for the lock before giving up with `RegistryLockError`."""

log = logging.getLogger(__name__)


class RegistryLockError(L2rayError):
    """A model's alias lock held by someone else for longer than a writer waits."""


def lock_name(model: str) -> str:
    """The registered model that serves as ``model``'s alias lock."""
    return f"{model}{LOCK_SUFFIX}"


@contextmanager
def alias_lock(client: Any, model: str, lease_s: float = LEASE_S, wait_s: float = WAIT_S) -> Iterator[None]:
    """Hold ``model``'s alias lock for the block (waiting for it, breaking an expired one)."""
    name = lock_name(model)
    deadline = time.monotonic() + wait_s
    while not _try_lock(client, name, lease_s):
        holder = _holder(client, name, lease_s)
        if holder is not None and holder[1] < time.time():
            log.warning("breaking the expired lock %s of %s", name, holder[0])
            _delete(client, name)
            continue
        if time.monotonic() > deadline:
            who = holder[0] if holder else "a writer that just released it"
            raise RegistryLockError(
                f"the alias lock of {model!r} ({name}) has been held by {who} for over {wait_s:.0f} s; "
                f"if that process is gone, delete registered model {name!r} (it expires by itself "
                f"{lease_s:.0f} s after it was taken)"
            )
        time.sleep(random.uniform(0.05, 0.25))
    try:
        yield
    finally:
        if not _delete(client, name):
            log.warning("the lock %s was gone at release: its lease ran out and a writer broke it", name)


def alias_version(client: Any, model: str, alias: str) -> str | None:
    """The version ``alias`` points at, ``None`` when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model, alias).version)
    except MlflowException as exc:
        if permission_denied(exc):
            raise _denied(f"read the aliases of {model!r}", "READ") from None
        return None


def denied_to_move(model: str, alias: str) -> RegistryPermissionError:
    """The error for a user who may read ``model`` but not move its aliases or tag its versions."""
    return _denied(f"move @{alias} of {model!r} or tag its versions", "EDIT")


def _denied(what: str, needs: str) -> RegistryPermissionError:
    user = current_user() or "anonymous"
    return RegistryPermissionError(
        f"MLflow user {user!r} may not {what} (403): run this with the account that holds {needs} on "
        "the registered model (MLFLOW_TRACKING_USERNAME), or have the server's admin grant it"
    )


def _try_lock(client: Any, name: str, lease_s: float) -> bool:
    from mlflow.exceptions import MlflowException

    holder = f"{current_user() or 'anonymous'}@{socket.gethostname()}:{os.getpid()} since {utc_iso()}"
    tags = {HOLDER_TAG: holder, EXPIRES_TAG: f"{time.time() + lease_s:.3f}"}
    try:
        client.create_registered_model(name, tags=tags, description="l2ray alias lock: held while moving")
    except MlflowException as exc:
        # The store reads the existing lock back to report it: gone by then, it says "not found".
        if exc.error_code in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
            return False
        if permission_denied(exc):
            raise _denied(f"create registered models (the alias lock {name!r})", "create") from None
        raise
    return True


def _holder(client: Any, name: str, lease_s: float) -> tuple[str, float] | None:
    """``(holder, lease end in Unix seconds)`` of the lock, ``None`` when it is gone.

    A lock read back without its tags (an authenticated server has answered so, just after another
    writer created it) ends its lease ``lease_s`` after its creation, not at once: breaking it would
    be breaking a live writer's lock."""
    from mlflow.exceptions import MlflowException

    try:
        lock = client.get_registered_model(name)
    except MlflowException:
        return None
    created_s = (lock.creation_timestamp or 0) / 1000
    return lock.tags.get(HOLDER_TAG, "unknown"), float(lock.tags.get(EXPIRES_TAG, created_s + lease_s))


def _delete(client: Any, name: str) -> bool:
    """Delete the lock; ``False`` when it was already gone."""
    from mlflow.exceptions import MlflowException

    try:
        client.delete_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        if permission_denied(exc):
            raise _denied(f"delete the alias lock {name!r} another user holds", "MANAGE") from None
        raise
    return True


__all__ = [
    "LOCK_SUFFIX",
    "RegistryLockError",
    "alias_lock",
    "alias_version",
    "denied_to_move",
    "lock_name",
]
