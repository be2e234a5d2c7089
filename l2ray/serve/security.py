"""API keys, body-size limit and per-key concurrency for the ingress.

Keys come from an environment variable (comma- or newline-separated) and/or a secret file (one per
line); with none configured the server is open. A presented key is compared with every configured
key in constant time; only a short hash of it (``key_id``) is ever used as an identifier, so a key
never reaches a log line or an error body.

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

from l2ray.serve.protocol import RequestError

ANONYMOUS = "anonymous"


def load_keys(env_var: str | None, key_file: str | None) -> list[str]:
    """Configured keys from ``$env_var`` and ``key_file``; a named file that is missing is an error."""
    keys: list[str] = []
    if env_var and os.environ.get(env_var):
        keys += os.environ[env_var].replace("\n", ",").split(",")
    if key_file:
        path = Path(key_file)
        if not path.is_file():
            raise FileNotFoundError(f"serve.api_keys_file {key_file!r} does not exist; create it or unset it")
        keys += path.read_text(encoding="utf-8").splitlines()
    return [k.strip() for k in keys if k.strip()]


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
