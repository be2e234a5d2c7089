"""The intervention inside vLLM: one processor class that becomes the adapter of whichever model
runner the engine uses.

vLLM has two logits-processor interfaces: the V1 model runner's (its CPU build, and GPUs with
``VLLM_USE_V2_MODEL_RUNNER=0``) and Model Runner V2's (its GPU default), each rejecting the other's
classes, and which runner an engine uses is decided inside vLLM (environment, Triton, the features
asked for). `L2rayLogitsProcessor` subclasses both interfaces, so either runner accepts it, and is
constructed by the runner with that runner's arguments — ``(vllm_config, device, is_pin_memory)`` on
V1, ``(vllm_config, req_states)`` on V2 — from which it builds that runner's adapter over the one
`PolicyCore`: `V1Processor` or `ModelRunnerV2Processor`. Both read the model's reasoning vocabulary
once (`engine_vocab`) and refuse a malformed spec at admission (`validate_params`).

Example:
    >>> LLM(model=path, logits_processors=[L2rayLogitsProcessor])  # doctest: +SKIP
    >>> python -m vllm.entrypoints.openai.api_server --logits-processors \\
    ...     l2ray.decode.vllm_processor:L2rayLogitsProcessor  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from vllm.v1.sample.logits_processor import LogitsProcessor as V1LogitsProcessor
from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor as V2LogitsProcessor

from l2ray.decode.vllm_requests import engine_vocab, validate_params


class L2rayLogitsProcessor(V1LogitsProcessor, V2LogitsProcessor):
    """Built by vLLM's model runner; returns that runner's adapter (see the module doc)."""

    def __new__(cls, vllm_config: Any, *runner_args: Any) -> Any:  # type: ignore[misc]
        if getattr(vllm_config, "speculative_config", None) is not None:
            raise ValueError(
                "the l2ray logits processor cannot run with speculative decoding (a request's draft "
                "positions cannot be judged before they are verified); turn speculative decoding off"
            )
        if len(runner_args) == 1:  # Model Runner V2: (vllm_config, req_states)
            from l2ray.decode.vllm_v2 import ModelRunnerV2Processor

            return ModelRunnerV2Processor(engine_vocab(vllm_config), runner_args[0])
        from l2ray.decode.vllm_v1 import V1Processor

        device = runner_args[0]
        slots = getattr(getattr(vllm_config, "scheduler_config", None), "max_num_seqs", 256)
        return V1Processor(engine_vocab(vllm_config), device, slots)

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        """Refuse a malformed spec when the request arrives (a 400 at a vLLM server), not mid-batch."""
        validate_params(sampling_params)


__all__ = ["L2rayLogitsProcessor"]
