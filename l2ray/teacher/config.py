"""Recipe section for the teacher LLM that writes multilingual traces."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from l2ray._schema import Section


class TeacherConfig(Section):
    """An OpenAI-compatible endpoint or a local transformers model, behind a response cache.

    ``kind: openai`` talks to any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, DeepSeek,
    a vLLM or SGLang server, l2ray's own serve app). The API key is read from the environment
    variable named by ``api_key_env`` and is never logged or written anywhere. With ``base_url``
    unset only cached and recorded responses can be used, and a cache miss is an error.

    Finished requests are kept in ``cache_dir`` (JSONL shards, one writer per actor); on a cluster
    of several nodes it must be storage every node shares (NFS, a mounted bucket).

    ``kind: transformers`` runs ``model`` (an HF id or a local folder) in the actor process, on
    ``device`` (default: CUDA when available). ``kind: python`` calls ``factory``
    (``module:callable``, e.g. the lab's ``l2ray.lab.teacher:LabTeacher``) with ``model`` inside each
    actor and uses the Teacher it returns. ``requests_per_minute`` / ``tokens_per_minute`` are
    limits for the whole run; the pipeline splits them evenly over its actors.
    """

    kind: Literal["openai", "transformers", "python"] = "openai"
    base_url: str | None = None
    model: str = "l2ray-recorded-teacher"
    api_key_env: str = "L2RAY_TEACHER_API_KEY"
    device: str | None = Field(default=None, description="transformers teacher: cpu, cuda, cuda:1, …")
    factory: str | None = Field(
        default=None, pattern=r"^[\w.]+:\w+$", description="python teacher: module:callable(model) -> Teacher"
    )
    temperature: float = Field(default=0.6, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(default=8192, ge=1)
    timeout_s: float = Field(default=300.0, gt=0)
    max_retries: int = Field(default=6, ge=0)
    backoff_base_s: float = Field(default=1.0, ge=0, description="first retry waits about this long")
    backoff_max_s: float = Field(default=60.0, ge=0, description="no retry waits longer (Retry-After too)")
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    concurrency: int = Field(default=64, ge=1, description="requests in flight per actor")
    price_per_mtok_input: float | None = Field(default=None, ge=0)
    price_per_mtok_output: float | None = Field(default=None, ge=0)
    cache_dir: str | None = Field(default=None, description="default: <run dir>/teacher_cache")
    use_recorded: bool = Field(default=True, description="seed the cache with recorded responses")
    recorded_dir: str | None = Field(
        default=None, description="folder of recorded <lang>.jsonl files; default: the bundled ones"
    )
