"""Recipe sections for the teachers: one endpoint (`TeacherConfig`) and the two roles (`TeachersConfig`).

Example:
    >>> roles = teacher_roles(TeacherConfig(model="one"), None)
    >>> roles["translator"] is roles["reasoner"]  # the single ``teacher:`` section serves both
    True
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from l2ray._schema import Section
from l2ray.recipe.http import HttpClientSettings
from l2ray.recipe.vllm import VllmEngineConfig

Role = Literal["translator", "reasoner"]
ROLES: tuple[Role, ...] = ("translator", "reasoner")


class TeacherConfig(HttpClientSettings):
    """An OpenAI-compatible endpoint or a local transformers model, behind a response cache.

    ``kind: openai`` talks to any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, DeepSeek,
    a vLLM or SGLang server, l2ray's own serve app). The API key is read from the environment
    variable named by ``api_key_env`` (``null``: the endpoint takes no key) and is never logged or
    written anywhere. With ``base_url`` unset only cached and recorded responses can be used, and a
    cache miss is an error.

    Timeouts, streaming and retries are `l2ray.recipe.http.HttpClientSettings`' (connect + silence,
    never a total: a long reasoning reply that keeps arriving is not cut).

    Finished requests are kept in ``cache_dir`` (JSONL shards, one writer per actor); on a cluster
    of several nodes it must be storage every node shares (NFS, a mounted bucket).

    ``kind: transformers`` runs ``model`` (an HF id or a local folder) in the actor process, on
    ``device`` (default: CUDA when available). ``requests_per_minute``, ``tokens_per_minute`` and
    ``max_cost_usd`` are limits for the whole run; the pipeline splits them evenly over its actors.
    Prices come from `l2ray.teacher.prices` unless ``price_per_mtok_input``/``_output`` are set.

    ``batch: true`` sends the role's requests through the OpenAI-compatible batch API before the
    pipeline runs (cheaper, slower; `l2ray.teacher.batch`); replies land in the same cache.
    ``kind: python`` calls ``factory`` (``module:callable``, e.g. the lab's
    ``l2ray.lab.teacher:LabTeacher``) with ``model`` inside each actor and uses the Teacher it returns.
    ``kind: vllm`` runs ``model`` on vLLM's async engine in each actor (settings in ``vllm``; the
    actors' GPUs are ``synth.actor_gpus``), sampling with ``seed``.
    """

    kind: Literal["openai", "transformers", "vllm", "python"] = "openai"
    base_url: str | None = None
    model: str = "l2ray-recorded-teacher"
    api_key_env: str | None = "L2RAY_TEACHER_API_KEY"
    device: str | None = Field(default=None, description="transformers teacher: cpu, cuda, cuda:1, …")
    vllm: VllmEngineConfig = Field(default_factory=VllmEngineConfig, description="settings of kind: vllm")
    seed: int = Field(default=0, description="sampling seed of a local teacher (vllm)")
    factory: str | None = Field(
        default=None, pattern=r"^[\w.]+:\w+$", description="python teacher: module:callable(model) -> Teacher"
    )
    temperature: float = Field(default=0.6, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(default=8192, ge=1)
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    concurrency: int = Field(default=64, ge=1, description="requests in flight per actor")
    price_per_mtok_input: float | None = Field(default=None, ge=0, description="USD; default: price table")
    price_per_mtok_output: float | None = Field(default=None, ge=0, description="USD; default: price table")
    max_cost_usd: float | None = Field(default=None, gt=0, description="send nothing new past this spend")
    batch: bool = Field(default=False, description="send through the batch API (/v1/files + /v1/batches)")
    batch_poll_s: float = Field(default=30.0, gt=0, description="how often a submitted batch is polled")
    batch_max_requests: int = Field(default=50_000, ge=1, description="lines per batch (OpenAI's limit)")
    cache_dir: str | None = Field(default=None, description="default: <run dir>/teacher_cache")
    use_recorded: bool = Field(default=True, description="seed the cache with recorded responses")
    recorded_dir: str | None = Field(
        default=None, description="folder of recorded <lang>.jsonl files; default: the bundled ones"
    )


class TeachersConfig(Section):
    """The paper's split: a ``translator`` (questions, code-switched fragments; e.g. GPT-4o) and a
    ``reasoner`` (the long chain of thought of a whole trace; e.g. DeepSeek R1). Each role has its
    own endpoint, key, limits, prices and budget."""

    translator: TeacherConfig
    reasoner: TeacherConfig


def teacher_roles(teacher: TeacherConfig, teachers: TeachersConfig | None) -> dict[Role, TeacherConfig]:
    """Role → section: ``teachers`` when given, else the single ``teacher`` (the same object) for both."""
    if teachers is None:
        return {"translator": teacher, "reasoner": teacher}
    return {"translator": teachers.translator, "reasoner": teachers.reasoner}
