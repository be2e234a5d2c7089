"""Request-per-minute and token-per-minute limits as async token buckets.

Tokens are charged twice: the estimated prompt size before a request is sent, and the completion
tokens (plus whatever the estimate missed of the prompt) once the reply says how many there were
(the bucket may go negative; later requests wait). ``pause`` holds every request back for a while:
a 429 with ``Retry-After`` speaks for the whole key, not for the one request that received it.

Example:
    >>> import asyncio
    >>> limiter = RateLimiter(requests_per_minute=600)
    >>> asyncio.run(limiter.acquire(tokens=10))  # the first request never waits
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal


class TokenBucket:
    """``rate_per_minute`` units refill continuously; capacity is one minute's worth."""

    def __init__(self, rate_per_minute: float) -> None:
        self.rate = rate_per_minute / 60.0
        self.capacity = float(rate_per_minute)
        self.level = self.capacity
        self.stamp = time.monotonic()

    def refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_time(self, amount: float) -> float:
        """Seconds until ``amount`` units are available (0 when they are)."""
        self.refill()
        need = min(amount, self.capacity) - self.level
        return max(need, 0.0) / self.rate


class RateLimiter:
    """RPM and TPM limits for one process; either may be ``None`` (unlimited)."""

    def __init__(
        self, requests_per_minute: float | None = None, tokens_per_minute: float | None = None
    ) -> None:
        self._requests = TokenBucket(requests_per_minute) if requests_per_minute else None
        self._tokens = TokenBucket(tokens_per_minute) if tokens_per_minute else None
        self._lock: asyncio.Lock | None = None
        self._resume_at = 0.0

    @property
    def active(self) -> bool:
        return self._requests is not None or self._tokens is not None

    @property
    def paused(self) -> bool:
        """Whether a ``pause`` is holding requests back now."""
        return self._resume_at > time.monotonic()

    def pause(self, seconds: float) -> None:
        """Send nothing for ``seconds`` from now (a longer pause already running is kept)."""
        self._resume_at = max(self._resume_at, time.monotonic() + seconds)

    async def acquire(self, tokens: int = 0) -> None:
        """Wait out any pause, then until one request and ``tokens`` prompt tokens fit; take them."""
        while (wait := self._resume_at - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        if not self.active:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # FIFO: a big request is not starved by a stream of small ones
            while True:
                wait = max(
                    self._requests.wait_time(1) if self._requests else 0.0,
                    self._tokens.wait_time(tokens) if self._tokens else 0.0,
                )
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            if self._requests:
                self._requests.level -= 1
            if self._tokens:
                self._tokens.level -= tokens

    def charge_tokens(self, tokens: int) -> None:
        """Charge tokens learned after the fact (completion tokens, a prompt's underestimate; a
        negative amount refunds an overestimate)."""
        if self._tokens is not None:
            self._tokens.refill()
            self._tokens.level -= tokens


class AdaptiveWindow:
    """How many requests may be in flight, adapted to the endpoint (AIMD, as TCP does).

    A 429 without ``Retry-After`` (DeepSeek's way of saying "too many at once") halves the window,
    once per round: 429s of requests sent before the last cut do not cut again. Every success grows
    it by ``1/window`` (about one per round trip of a full window), up to ``ceiling``.

    Example:
        >>> import asyncio
        >>> window = AdaptiveWindow(ceiling=8)
        >>> ticket = asyncio.run(window.acquire())
        >>> window.release(ticket, "overloaded"); window.limit
        4.0
    """

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.limit = float(ceiling)
        self.in_flight = 0
        self._round = 0
        self._waiters: asyncio.Event | None = None

    async def acquire(self) -> int:
        """Wait for a free slot; returns the round the request is sent in (give it to `release`)."""
        if self._waiters is None:
            self._waiters = asyncio.Event()
        while self.in_flight >= max(1, int(self.limit)):
            self._waiters.clear()
            await self._waiters.wait()
        self.in_flight += 1
        return self._round

    def release(self, sent_in_round: int, outcome: Literal["ok", "overloaded", "failed"]) -> None:
        """Free the slot. ``overloaded``: the endpoint refused the request for load (a bare 429);
        ``failed``: any other failure (neither grows nor shrinks the window)."""
        self.in_flight -= 1
        if outcome == "overloaded" and sent_in_round == self._round:
            self.limit = max(1.0, self.limit / 2)
            self._round += 1
        elif outcome == "ok":
            self.limit = min(float(self.ceiling), self.limit + 1.0 / self.limit)
        if self._waiters is not None:
            self._waiters.set()
