"""How an HTTP client of an OpenAI-compatible endpoint waits and retries: the fields the teacher
sections and evaluation's endpoint share (`l2ray.teacher.transport` reads them).

Timeouts fit long replies: ``connect_timeout_s`` bounds opening a connection and ``read_timeout_s``
the longest *silence* while a reply arrives, never the whole reply (a 16k-token reasoning reply takes
minutes; DeepSeek keeps a slow reply alive with blank lines). With ``stream: true`` the reply comes as
server-sent events, so every token resets the silence: for endpoints that send nothing until done.

Example:
    >>> HttpClientSettings(read_timeout_s=60).max_retries
    6
    >>> from l2ray.recipe import EvalConfig
    >>> settings = EvalConfig(read_timeout_s=60).http_settings()
    >>> type(settings).__name__, settings.read_timeout_s, settings.max_retries
    ('HttpClientSettings', 60.0, 2)
"""

from __future__ import annotations

from pydantic import Field

from l2ray._schema import Section


class HttpClientSettings(Section):
    """Timeouts, streaming and retries of one OpenAI-compatible endpoint."""

    connect_timeout_s: float = Field(default=30.0, gt=0)
    read_timeout_s: float = Field(default=300.0, gt=0, description="longest silence within one reply")
    stream: bool = Field(
        default=False,
        description="ask for server-sent events: every token resets read_timeout_s (for endpoints that "
        "send nothing until a long reply is done)",
    )
    max_retries: int = Field(default=6, ge=0, description="retries of a request before it fails")
    backoff_base_s: float = Field(default=1.0, ge=0, description="first retry waits about this long")
    backoff_max_s: float = Field(default=60.0, ge=0, description="no retry waits longer (Retry-After too)")

    def http_settings(self) -> HttpClientSettings:
        """These settings alone, from a section that extends them (what travels to a client)."""
        return HttpClientSettings.model_validate(
            self.model_dump(include=set(HttpClientSettings.model_fields))
        )
