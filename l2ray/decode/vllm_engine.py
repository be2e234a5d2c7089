"""vLLM as the decode engine: `DecodeRequest`s in, `Completion`s out, the intervention in the engine.

`engine_kwargs` is the one place vLLM is configured (the Serve Generator's `AsyncLLM`, evaluation's
engines and `VllmEngine` below all start from it); `sampling_params` turns a `DecodeRequest` into
vLLM's `SamplingParams`, the request's `PolicySpec` riding in ``extra_args`` for `L2rayLogitsProcessor`
(the adapter of whichever model runner the engine picks);
`completion_of` turns vLLM's output ids back into a `Completion` whose counters (thinking and answer
tokens, switches, language mix) come from replaying the request's policy over them — the policy's
counters depend only on the tokens it observes, so the replay equals the engine-side state.

Example:
    >>> engine = VllmEngine(path, VllmEngineConfig(dtype="float32", enforce_eager=True))  # doctest: +SKIP
    >>> request = DecodeRequest(prompt_ids, 64, InterventionConfig(force="zh"))  # doctest: +SKIP
    >>> [done] = engine.complete([request])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from l2ray.decode.codec import Codec
from l2ray.decode.engine import completion_from
from l2ray.decode.policy import RequestPolicy
from l2ray.decode.types import Completion, DecodeRequest, TokenStep
from l2ray.errors import L2rayError
from l2ray.recipe import VllmEngineConfig

ENV_DEFAULTS = {
    # Keep a CPU machine's cores all working (vLLM reserves one by default).
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
}


class EngineModelError(L2rayError, ValueError):
    """A model this vLLM build cannot run, found before its engine process starts."""


def engine_kwargs(model_path: str, config: VllmEngineConfig) -> dict[str, Any]:
    """Keyword arguments of `vllm.LLM` / `AsyncEngineArgs` for ``model_path`` with the l2ray processor.

    Refuses a local model whose attention head size vLLM's CPU backend has no kernel for. Build the
    engine inside `engine_environment`.
    """
    from l2ray.decode.vllm_processor import L2rayLogitsProcessor

    check_cpu_head_size(model_path)
    return {
        "model": model_path,
        "dtype": config.dtype,
        "enforce_eager": config.enforce_eager,
        "enable_prefix_caching": config.enable_prefix_caching,
        "tensor_parallel_size": config.tensor_parallel_size,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "max_model_len": config.max_model_len,
        "max_num_seqs": config.max_num_seqs,
        "stream_interval": config.stream_interval,
        "logits_processors": [L2rayLogitsProcessor],
    }


@contextmanager
def engine_environment(config: VllmEngineConfig) -> Iterator[None]:
    """The environment vLLM's engine processes start in, for as long as an engine is being built; this
    process's own environment is restored afterwards.

    l2ray's defaults (`ENV_DEFAULTS`, the CPU KV-cache size) are set unless already set. vLLM's CPU
    platform writes its own into ``os.environ`` while it configures an engine (``LD_PRELOAD`` of
    torch's libgomp, thread and world-size variables), meant for the processes it spawns; left there,
    they reach every process started afterwards. A Ray cluster started after an engine in the same
    process inherited them, and its training workers ran 3 × slower (the CI lab study's training:
    180 s instead of 60 s).
    """
    saved = dict(os.environ)
    for name, value in {**ENV_DEFAULTS, "VLLM_CPU_KVCACHE_SPACE": f"{config.cpu_kv_cache_gib:g}"}.items():
        os.environ.setdefault(name, value)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def check_cpu_head_size(model_path: str) -> None:
    """On vLLM's CPU build, a head size without a kernel kills the engine process at its first step
    with no cause the caller sees (`EngineDeadError`); say it here, with the fix. A model whose head
    size its ``config.json`` does not tell (a hub id, another layout) is left to vLLM."""
    from vllm.platforms import current_platform

    config_file = Path(model_path) / "config.json"
    if not current_platform.is_cpu() or not config_file.is_file():
        return
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    found = _head_size(json.loads(config_file.read_text()))
    supported = CPUAttentionBackend.get_supported_head_sizes()
    if found is not None and found[0] not in supported:
        raise EngineModelError(
            f"model {model_path}: attention head size {found[0]} ({found[1]} in {config_file}) has no "
            f"kernel in vLLM's CPU backend (it has {supported}) — run this model with engine: "
            "transformers, or on a GPU"
        )


def sampling_params(request: DecodeRequest, codec: Codec) -> Any:
    """vLLM `SamplingParams` of ``request``; raises `PolicyError` when the model cannot carry it out."""
    from vllm import SamplingParams

    from l2ray.decode.vllm_requests import request_args

    spec = codec.spec(request)
    extra = request_args(spec) if request.intervention.active else None
    return SamplingParams(
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        seed=request.seed if request.temperature > 0 else None,
        logit_bias=dict(request.logit_bias) or None,
        logprobs=request.logprobs or None,
        ignore_eos=request.ignore_eos,
        stop_token_ids=list(codec.vocab.stop_ids),
        skip_special_tokens=False,
        detokenize=False,  # the codec decodes the ids once, where the text is needed
        extra_args=extra,
    )


def completion_of(
    codec: Codec,
    request: DecodeRequest,
    tokens: Sequence[int],
    finish_reason: str | None,
    latency_s: float = 0.0,
) -> Completion:
    """The `Completion` of a request vLLM generated ``tokens`` for (a trailing stop token dropped)."""
    policy = codec.policy(request)
    steps = [TokenStep(int(t), is_stop=int(t) in codec.vocab.stop_ids) for t in tokens]
    for step in steps:
        policy.observe(step.token)
    if steps:
        steps[-1].finish_reason = finish_reason
        steps[-1].usage = policy.counters()
    done = completion_from(codec, policy.spec, len(request.prompt_ids), steps)
    done.latency_s = latency_s
    return done


def token_steps(
    codec: Codec, output: Any, policy: RequestPolicy, top_wanted: int, finished: bool
) -> list[TokenStep]:
    """The `TokenStep`s of one vLLM delta output (``RequestOutputKind.DELTA``) of a request.

    ``policy`` (a fresh one of the request) observes the tokens, so the last step can carry its
    counters as ``usage``; ``top_wanted`` alternatives per token come from vLLM's raw logprobs (the
    distribution before any processor, as the transformers engine reports them).
    """
    steps = []
    logprobs = output.logprobs or [None] * len(output.token_ids)
    for token, alternatives in zip(output.token_ids, logprobs, strict=True):
        step = TokenStep(int(token), is_stop=int(token) in codec.vocab.stop_ids)
        if top_wanted and alternatives:
            ranked = sorted(alternatives.items(), key=lambda kv: kv[1].rank)
            step.top = [(int(t), float(lp.logprob)) for t, lp in ranked[:top_wanted]]
            step.logprob = float(alternatives[token].logprob) if token in alternatives else None
        policy.observe(step.token)
        steps.append(step)
    if finished:
        if not steps:  # vLLM may finish with an empty delta: a stop step carries the reason
            steps.append(TokenStep(codec.vocab.stop_ids[0], is_stop=True))
        steps[-1].finish_reason = output.finish_reason or "length"
        steps[-1].usage = policy.counters()
    return steps


class VllmEngine:
    """A synchronous `vllm.LLM` with the intervention (evaluation's engines, tests, benchmarks).

    When its engine process dies, a `complete` in progress raises vLLM's ``EngineDeadError`` instead
    of waiting forever (`wake_on_engine_death`).
    """

    def __init__(self, model_path: str, config: VllmEngineConfig | None = None) -> None:
        from vllm import LLM

        self.model_path = model_path
        self.codec = Codec.from_pretrained(model_path)
        config = config or VllmEngineConfig()
        with engine_environment(config):
            self.llm = LLM(**engine_kwargs(model_path, config))
        wake_on_engine_death(self.llm.llm_engine.engine_core)

    def complete(self, requests: Sequence[DecodeRequest]) -> list[Completion]:
        """Decode ``requests`` in one continuous batch; one `Completion` each, in order."""
        from vllm.inputs import TokensPrompt

        params = [sampling_params(r, self.codec) for r in requests]
        start = time.perf_counter()
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(r.prompt_ids)) for r in requests], params, use_tqdm=False
        )
        latency = (time.perf_counter() - start) / max(len(requests), 1)
        return [
            completion_of(self.codec, r, out.outputs[0].token_ids, out.outputs[0].finish_reason, latency)
            for r, out in zip(requests, outputs, strict=True)
        ]


def wake_on_engine_death(client: Any) -> None:
    """Make a blocked ``LLM.generate`` raise ``EngineDeadError`` when an engine process dies.

    vLLM's synchronous client (0.32) notices a killed engine process (SIGKILL, the kernel's OOM
    killer) and shuts down, but the thread waiting for outputs is never told: ``generate`` would
    wait forever. A daemon thread waits on the engine processes, marks the client dead (so later
    calls fail at once) and hands that waiting thread the error. A client without engine processes
    (in-process engine) is left as it is.
    """
    import threading
    from multiprocessing import connection

    from vllm.v1.engine.exceptions import EngineDeadError

    manager = getattr(client.resources, "engine_manager", None)
    outputs = getattr(client, "outputs_queue", None)
    if manager is None or outputs is None:
        return
    sentinels = manager.sentinels()

    def wait_then_wake() -> None:
        connection.wait(sentinels)
        # Dead first (what vLLM's own monitor does, but later): a call made after this one fails
        # at once instead of sending into the dead engine's socket and waiting forever.
        client.resources.engine_dead = True
        outputs.put_nowait(EngineDeadError())

    threading.Thread(target=wait_then_wake, daemon=True, name="l2ray-engine-death").start()


def _head_size(config: dict[str, Any]) -> tuple[int, str] | None:
    """``(head size, where it came from)`` of a transformers config (its ``text_config`` if nested)."""
    text = config.get("text_config") or config
    if isinstance(text.get("head_dim"), int):
        return text["head_dim"], "head_dim"
    hidden, heads = text.get("hidden_size"), text.get("num_attention_heads")
    if isinstance(hidden, int) and isinstance(heads, int) and heads > 0:
        return hidden // heads, "hidden_size / num_attention_heads"
    return None


__all__ = [
    "ENV_DEFAULTS",
    "EngineModelError",
    "VllmEngine",
    "check_cpu_head_size",
    "completion_of",
    "engine_environment",
    "engine_kwargs",
    "sampling_params",
    "token_steps",
    "wake_on_engine_death",
]
