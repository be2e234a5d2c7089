"""A `CompletionBackend` over HTTP: any OpenAI-compatible ``/v1/completions`` (vLLM, l2ray itself).

It sends token-id prompts and asks for token ids back (``return_tokens_as_token_ids``, a vLLM
extension l2ray's server implements too), ``logprobs`` for the top alternatives, ``logit_bias`` for
the policy's choice, ``ignore_eos`` to see the alternatives at an end-of-sequence position, and the
request's ``temperature``/``top_p``/``seed`` (greedy when temperature is 0).
"""

from __future__ import annotations

from typing import Any

import httpx

from l2ray.decode.segment import GREEDY, Sampling
from l2ray.decode.types import TokenStep

TOKEN_ID_PREFIX = "token_id:"


class OpenAICompletionsBackend:
    """Continuations (greedy or seeded sampling) from an OpenAI-compatible server.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000/v1``.
        model: the model name that server serves.
        api_key: sent as ``Authorization: Bearer …`` when given.
    """

    def __init__(
        self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 600.0
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self.client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)

    async def complete(
        self,
        prompt_ids: list[int],
        max_tokens: int,
        top_logprobs: int,
        logit_bias: dict[int, float],
        ignore_eos: bool = False,
        sampling: Sampling = GREEDY,
    ) -> tuple[list[TokenStep], str]:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt_ids,
            "max_tokens": max_tokens,
            "temperature": sampling.temperature,
            "logprobs": max(top_logprobs, 1),  # at least 1: the token ids come back with them
            "return_tokens_as_token_ids": True,
            "ignore_eos": ignore_eos,
        }
        if sampling.temperature > 0:
            body["top_p"] = sampling.top_p
            if sampling.seed is not None:
                body["seed"] = sampling.seed
        if logit_bias:
            body["logit_bias"] = {str(token): value for token, value in logit_bias.items()}
        response = await self.client.post("/completions", json=body)
        if response.status_code != 200:
            raise RuntimeError(
                f"generator at {self.client.base_url} answered {response.status_code}: {response.text[:300]}"
            )
        choice = response.json()["choices"][0]
        logprobs = choice.get("logprobs") or {}
        tokens = [_token_id(t) for t in logprobs.get("tokens") or []]
        tops = logprobs.get("top_logprobs") or [{} for _ in tokens]
        steps = [
            TokenStep(token, top=sorted(((_token_id(k), v) for k, v in top.items()), key=lambda kv: -kv[1]))
            for token, top in zip(tokens, tops, strict=True)
        ]
        return steps, choice.get("finish_reason") or "length"

    async def close(self) -> None:
        await self.client.aclose()


def _token_id(token: str) -> int:
    if not token.startswith(TOKEN_ID_PREFIX):
        raise RuntimeError(
            f"generator returned token {token!r} without ids; it must support return_tokens_as_token_ids"
        )
    return int(token.removeprefix(TOKEN_ID_PREFIX))
