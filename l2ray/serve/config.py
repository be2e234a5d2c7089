"""Recipe section for the Ray Serve deployment graph."""

from __future__ import annotations

from pydantic import Field

from l2ray._schema import Section


class ServeConfig(Section):
    """Where and how the student is served (OpenAI-compatible)."""

    model: str | None = Field(default=None, description="default: models:/<registered model>@champion")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    replicas: int = Field(default=1, ge=1)
    num_cpus: float = Field(default=0.5, gt=0.0)
    num_gpus: float = Field(default=0.0, ge=0.0)
    max_batch_size: int = Field(default=8, ge=1)
    batch_wait_timeout_s: float = Field(default=0.01, ge=0.0)
    max_tokens_limit: int = Field(default=32768, ge=1)
    api_keys_env: str | None = "L2RAY_API_KEYS"
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    max_concurrency_per_key: int = Field(default=16, ge=1)
