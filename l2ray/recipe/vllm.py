"""Recipe section for the vLLM engine: settings shared by serving, evaluation, the pilot and a local
teacher."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from l2ray._schema import Section


class VllmEngineConfig(Section):
    """vLLM engine settings shared by serving, evaluation and the pilot (`l2ray.decode.vllm_engine`).

    Example:
        >>> VllmEngineConfig(dtype="float32", enforce_eager=True).tensor_parallel_size
        1
    """

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="float32 for token parity with the transformers engine"
    )
    enforce_eager: bool = Field(default=False, description="skip graph compilation (fast start)")
    enable_prefix_caching: bool = True
    tensor_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)
    max_model_len: int | None = Field(default=None, ge=1, description="default: the model's context length")
    max_num_seqs: int = Field(default=256, ge=1, description="rows decoded together (continuous batching)")
    cpu_kv_cache_gib: float = Field(
        default=1.0, gt=0.0, description="KV cache on CPU machines (VLLM_CPU_KVCACHE_SPACE)"
    )
    stream_interval: int = Field(
        default=16,
        ge=1,
        description="tokens a served request's stream carries per message (vLLM's --stream-interval; "
        "the first token and the last always go at once): fewer, larger messages through the serve "
        "graph; a stop string is found at most this many tokens late",
    )

    def check_reserved_gpus(self, num_gpus: float, section: str) -> None:
        """A replica reserves ``num_gpus`` for an engine of ``tensor_parallel_size`` shards: they must
        agree (0 on CPU; a fraction of one GPU shares it when ``tensor_parallel_size`` is 1), or Ray
        places a replica on fewer GPUs than vLLM then asks for.

        >>> VllmEngineConfig(tensor_parallel_size=2).check_reserved_gpus(1, "serve")
        Traceback (most recent call last):
        ...
        ValueError: serve.num_gpus (1) is what each vLLM replica reserves and must equal ...
        """
        tp = self.tensor_parallel_size
        if num_gpus and (num_gpus > tp or (tp > 1 and num_gpus != tp)):
            raise ValueError(
                f"{section}.num_gpus ({num_gpus:g}) is what each vLLM replica reserves and must equal "
                f"{section}.vllm.tensor_parallel_size ({tp}); set {section}.num_gpus: {tp} (or 0 on CPU, "
                "or a fraction of one GPU with tensor_parallel_size 1)"
            )
