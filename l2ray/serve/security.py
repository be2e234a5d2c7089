"""API keys, body-size limit and per-key concurrency for the ingress.

Keys come from an environment variable (comma- or newline-separated) and/or a secret file (one per
line); with neither configured the server is open. Configuring one fails closed: a named variable
that is unset or holds no key, or a key file that is missing or empty, stops the server from
starting (`ApiKeyConfigError`) instead of serving without keys. A presented key is compared with
every configured key in constant time; only a short hash of it (``key_id``) is ever used as an
identifier, so a key never reaches a log line or an error body.

Example:
    >>> guard = KeyGuard(["s3cret"])
    >>> guard.authenticate("Bearer s3cret") == key_id("s3cret")
    True
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from l2ray.errors import L2rayError
from l2ray.serve.protocol import RequestError

ANONYMOUS = "anonymous"


class ApiKeyConfigError(L2rayError, RuntimeError):
    """API keys are configured but none can be read: the server must not start open."""


def load_keys(env_var: str | None, key_file: str | None) -> list[str]:
    """Configured keys from ``$env_var`` and ``key_file``; ``[]`` (an open server) only when neither is named.

    Raises `ApiKeyConfigError` when a named source yields no key: a secret that failed to reach the
    replica must not turn a protected deployment into an open one.
    """
    keys: list[str] = []
    if env_var:
        from_env = _split(os.environ.get(env_var, "").replace("\n", ","), ",")
        if not from_env:
            state = "is not set" if env_var not in os.environ else "holds no key"
            raise ApiKeyConfigError(
                f"serve.api_keys_env names ${env_var}, but it {state} in this replica, so the server "
                f"refuses to start without keys. Set {env_var} to comma-separated keys where the server "
                "runs (e.g. from a Kubernetes Secret), or set serve.api_keys_env to null for an open server."
            )
        keys += from_env
    if key_file:
        path = Path(key_file)
        if not path.is_file():
            raise ApiKeyConfigError(
                f"serve.api_keys_file {key_file!r} does not exist; create it (one key per line) or unset it"
            )
        from_file = _split(path.read_text(encoding="utf-8"), "\n")
        if not from_file:
            raise ApiKeyConfigError(
                f"serve.api_keys_file {key_file!r} holds no key, so the server refuses to start without "
                "keys; write one key per line, or unset serve.api_keys_file for an open server"
            )
        keys += from_file
    return keys


def _split(text: str, separator: str) -> list[str]:
    """The non-blank, stripped keys of ``text``."""
    return [k.strip() for k in text.split(separator) if k.strip()]


def key_id(key: str) -> str:
    """A short, non-reversible identifier of a key (for concurrency accounting)."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class KeyGuard:
    """Checks ``Authorization: Bearer <key>`` headers against the configured keys."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def authenticate(self, header: str | None) -> str:
        """The caller's key id (``anonymous`` when keys are off); raises `RequestError` 401."""
        if not self._keys:
            return ANONYMOUS
        scheme, _, presented = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise RequestError(
                401, "missing API key: send 'Authorization: Bearer <key>'", code="invalid_api_key"
            )
        candidate = presented.strip().encode()
        matched = False
        for key in self._keys:  # no early exit: timing does not reveal which key matched
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            raise RequestError(401, "invalid API key", code="invalid_api_key")
        return key_id(presented.strip())


class ConcurrencyLimiter:
    """At most ``limit`` requests in flight per key id (per ingress replica); 429 beyond."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._active: dict[str, int] = {}

    def acquire(self, who: str) -> None:
        if self._active.get(who, 0) >= self.limit:
            raise RequestError(
                429,
                f"too many concurrent requests for this key (limit {self.limit}); retry later",
                code="concurrency_limit",
            )
        self._active[who] = self._active.get(who, 0) + 1

    def release(self, who: str) -> None:
        left = self._active.get(who, 0) - 1
        if left > 0:
            self._active[who] = left
        else:
            self._active.pop(who, None)


async def read_body(receive_stream, content_length: str | None, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes before reading it all."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise RequestError(400, "Content-Length is not a number") from None
        if declared > limit:
            raise RequestError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in receive_stream:
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
