"""Recipe section for the Ray Serve deployment graph; also the schema of `build_app`'s ``args``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from l2ray._schema import Section
from l2ray.recipe.vllm import VllmEngineConfig


class ServeConfig(Section):
    """Where and how the student is served (OpenAI-compatible).

    As ``args`` of ``l2ray.serve.app:build_app`` (``serve_config.yaml``) ``model`` is required. The
    generator is the ``Generator`` deployment — on ``engine: transformers`` (default; tiny students,
    machines without vLLM: static batches) or ``engine: vllm`` (`AsyncLLM`: continuous batching, paged
    KV cache, prefix caching; settings in ``vllm``) — or, with ``generator_url``, any
    OpenAI-compatible ``/v1/completions`` server driven by the controller's segment loop. ``graph``
    says whether the Generator is a deployment of its own (``split``) or lives in the Ingress replica
    (``direct``; its ``num_cpus``, ``num_gpus``, replicas and queue are then the Ingress's).
    """

    model: str | None = Field(default=None, description="default: models:/<registered model>@champion")
    tracking_uri: str | None = Field(default=None, description="MLflow tracking URI for models:/ URIs")
    served_model_name: str = Field(default="l2ray", min_length=1, description="the id in /v1/models")
    device: str | None = Field(default=None, description="cpu, cuda, cuda:1…; default cuda when available")
    engine: Literal["transformers", "vllm"] = Field(
        default="transformers", description="what the Generator replica decodes with"
    )
    vllm: VllmEngineConfig = Field(default_factory=VllmEngineConfig, description="settings of engine: vllm")
    graph: Literal["split", "direct"] = Field(
        default="split",
        description="split: Ingress -> Generator deployments (the Ingress answers 503 for a lost replica); "
        "direct: the Generator runs inside the Ingress replica (no Ray hop per token; Serve's proxy "
        "answers for a lost replica)",
    )
    generator_url: str | None = Field(
        default=None, description="an OpenAI-compatible base URL (…/v1) to generate with instead of a replica"
    )
    generator_api_key_env: str | None = Field(
        default=None, description="env var holding the API key for generator_url, if it wants one"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    replicas: int = Field(default=1, ge=1)
    autoscaling: dict[str, Any] | None = Field(
        default=None, description="Serve autoscaling_config of the Generator (replaces replicas)"
    )
    num_cpus: float = Field(default=0.5, gt=0.0)
    num_gpus: float = Field(default=0.0, ge=0.0)
    router_num_cpus: float = Field(
        default=0.1, gt=0.0, description="CPUs of each Ingress replica (it runs the reasoning controller)"
    )
    max_batch_size: int = Field(default=8, ge=1)
    batch_wait_timeout_s: float = Field(default=0.01, ge=0.0)
    max_ongoing_requests: int = Field(default=64, ge=1)
    max_queued_requests: int = Field(
        default=64,
        ge=1,
        description="requests waiting for a Generator replica beyond what its replicas take; past it a "
        "request gets 503 with Retry-After at once (Serve's max_queued_requests)",
    )
    max_tokens_limit: int = Field(default=32768, ge=1)
    max_n: int = Field(default=8, ge=1)
    api_keys_env: str | None = Field(
        default=None,
        description="env var with comma-separated API keys; once named it must hold one (else no start)",
    )
    api_keys_file: str | None = Field(
        default=None, description="a file with one API key per line; once named it must hold one"
    )
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    max_concurrency_per_key: int = Field(default=16, ge=1)

    @model_validator(mode="after")
    def _direct_needs_a_replica(self) -> ServeConfig:
        if self.graph == "direct" and self.generator_url:
            raise ValueError(
                "graph: direct runs the Generator inside the Ingress; with generator_url there is no "
                "Generator to run (use graph: split)"
            )
        return self

    @model_validator(mode="after")
    def _replicas_hold_their_tensor_parallel_shards(self) -> ServeConfig:
        if self.engine == "vllm" and not self.generator_url:
            self.vllm.check_reserved_gpus(self.num_gpus, "serve")
        return self

    @field_validator("autoscaling")
    @classmethod
    def _valid_autoscaling(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            from ray.serve.config import AutoscalingConfig  # only when used: ray is heavy

            AutoscalingConfig(**value)
        return value
