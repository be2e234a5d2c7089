"""Recipe section for the teacher LLM that writes multilingual traces."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from l2ray._schema import Section


class TeacherConfig(Section):
    """An OpenAI-compatible endpoint, a local transformers model, or vLLM (optional extra).

    The API key is read from the environment variable named by ``api_key_env`` and is never
    written anywhere. With ``base_url`` unset only cached/recorded responses can be used.
    """

    kind: Literal["openai", "transformers", "vllm"] = "openai"
    base_url: str | None = None
    model: str = "l2ray-recorded-teacher"
    api_key_env: str = "L2RAY_TEACHER_API_KEY"
    temperature: float = Field(default=0.6, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(default=8192, ge=1)
    timeout_s: float = Field(default=300.0, gt=0)
    max_retries: int = Field(default=6, ge=0)
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    concurrency: int = Field(default=64, ge=1, description="requests in flight per actor")
    price_per_mtok_input: float | None = Field(default=None, ge=0)
    price_per_mtok_output: float | None = Field(default=None, ge=0)
    cache_dir: str | None = Field(default=None, description="default: <run dir>/teacher_cache")
    use_recorded: bool = Field(default=True, description="seed the cache with the bundled recorded responses")
