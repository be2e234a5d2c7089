"""Recipe section for evaluation, the pilot study and eval-gated promotion.

A benchmark is a registered name (``mini``, ``aime24``, ``math500``, ``gpqa_diamond``) or a spec
with its own source and field map; a registered name with a ``source`` reads that source with the
name's field map (e.g. a copy saved with ``Dataset.save_to_disk``).

Example (YAML):
    eval:
      benchmarks: [mini, {name: aime24, source: /data/aime24_saved}, {name: mine, source: q.jsonl}]
      limit: 10
      configurations: {"off": {}, boost_zh: {boost: [zh]}, budget_2k: {max_thinking_tokens: 2048}}
      gate: {max_accuracy_drop: 0.01, min_thinking_token_reduction: 0.1, max_failure_rate: 0.02}
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from l2ray._schema import Section
from l2ray.languages import validate_codes
from l2ray.recipe.http import HttpClientSettings
from l2ray.recipe.intervention import InterventionConfig
from l2ray.recipe.vllm import VllmEngineConfig


class BenchmarkSpec(Section):
    """One benchmark: where its problems come from and how their fields are named.

    ``source`` is a ``.jsonl``/``.parquet`` file, a ``save_to_disk`` folder or a Hugging Face id; it
    defaults to the registered benchmark's own source when ``name`` is registered. Field names left
    unset take the registered benchmark's, then ``question``/``answer``/``id``.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    source: str | None = None
    subset: str | None = Field(default=None, description="HF config name, e.g. gpqa_diamond")
    split: str | None = None
    revision: str | None = None
    answer_type: Literal["math", "integer", "letter"] | None = None
    question_field: str | None = None
    answer_field: str | None = None
    id_field: str | None = None
    answer_type_field: str | None = Field(default=None, description="per-row answer type, e.g. answer_type")


class PromotionGate(Section):
    """A candidate replaces the champion when all hold (fractions: 0.01 = one point / 1 %).

    ``max_accuracy_drop``: candidate accuracy >= champion accuracy - this.
    ``min_thinking_token_reduction``: candidate mean thinking tokens <= champion's * (1 - this), both
    means over the problems neither evaluation failed on.
    ``max_failure_rate``: the candidate's failed requests, as a share of its samples, may not exceed the
    champion's unless they stay within this (with no champion yet, this is the limit).
    """

    max_accuracy_drop: float = Field(default=0.0, ge=0.0, le=1.0)
    min_thinking_token_reduction: float = Field(default=0.0, ge=0.0, le=1.0)
    max_failure_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="failure rate a candidate may always have; above it, no more than the champion's",
    )
    configuration: str | None = Field(
        default=None, description="configuration compared (default: the first of eval.configurations)"
    )


class EvalConfig(HttpClientSettings):
    """Benchmarks, samples and decoding configurations to compare; with ``endpoint``, how its HTTP
    client waits and retries (`HttpClientSettings`: connect + silence timeouts, ``stream``, backoff)."""

    benchmarks: list[str | BenchmarkSpec] = Field(default_factory=lambda: ["mini"], min_length=1)
    limit: int | None = Field(default=None, ge=1, description="problems per benchmark")
    samples: int = Field(default=1, ge=1, description="samples per problem (pass@k when > 1)")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(default=32768, ge=1)
    concurrency: int = Field(default=8, ge=1, description="requests in flight (HTTP) / batch size (local)")
    seed: int | None = Field(
        default=None, description="sampling and choice-shuffle seed (default: recipe.seed)"
    )
    model: str | None = Field(
        default=None, description="model to evaluate (default: student.model); models:/NAME@alias allowed"
    )
    endpoint: str | None = Field(default=None, description="OpenAI-compatible base URL; default in-process")
    engine: Literal["transformers", "vllm"] = Field(
        default="transformers", description="in-process engine (without endpoint)"
    )
    vllm: VllmEngineConfig = Field(default_factory=VllmEngineConfig, description="settings of engine: vllm")
    served_model: str | None = Field(
        default=None,
        description="`model` field sent to the endpoint (default: the model's URI if the endpoint's "
        "/models lists it, else the one id it lists)",
    )
    instruction: bool = Field(
        default=True,
        description="append the prompt language's request to reason in it and box the answer; off for "
        "a student trained on bare questions (the lab's: its SFT rows hold the question alone)",
    )
    l2ray_body: bool = Field(default=True, description='send {"l2ray": {intervention}} in request bodies')
    api_key_env: str | None = Field(default="OPENAI_API_KEY", description="env var holding the bearer key")
    read_timeout_s: float = Field(
        default=600.0,
        gt=0.0,
        description="longest silence within one reply (without stream: the whole generation, since a "
        "server sends nothing until it is done)",
    )
    max_retries: int = Field(default=2, ge=0, description="retries of a failed request before it counts")
    tokenizer: str | None = Field(default=None, description="tokenizer for counting (default: the model's)")
    device: str | None = Field(default=None, description="in-process device (default: cuda if available)")
    num_gpus: float = Field(
        default=0.0, ge=0.0, description="GPUs of each in-process engine (vllm: its tensor_parallel_size)"
    )
    replicas: int = Field(
        default=1, ge=1, description="in-process engines in the pool (data parallel; rows split among them)"
    )
    label: str | None = Field(default=None, description="output folder name under <run_dir>/eval/")
    configurations: dict[str, InterventionConfig] = Field(
        default_factory=lambda: {"off": InterventionConfig()}, min_length=1
    )
    gate: PromotionGate = Field(default_factory=PromotionGate)
    pilot_languages: list[str] | None = Field(
        default=None, description="pilot study languages besides en (default: recipe.languages)"
    )

    @field_validator("pilot_languages")
    @classmethod
    def _known_pilot_languages(cls, codes: list[str] | None) -> list[str] | None:
        return validate_codes(codes) if codes else codes

    @model_validator(mode="after")
    def _replicas_hold_their_tensor_parallel_shards(self) -> EvalConfig:
        if self.engine == "vllm":
            self.vllm.check_reserved_gpus(self.num_gpus, "eval")
        return self

    @model_validator(mode="after")
    def _gate_configuration_is_evaluated(self) -> EvalConfig:
        name = self.gate.configuration
        if name is not None and name not in self.configurations:
            raise ValueError(
                f"gate.configuration {name!r} is not one of eval.configurations: "
                + ", ".join(self.configurations)
            )
        return self
