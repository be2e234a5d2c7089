"""Test-only engines over the in-process decode engine: chat generation in one call, and the HTTP
segment loop's reference backend (what an HTTP-only generator does, without the network)."""

from __future__ import annotations

from dataclasses import dataclass

from l2ray.decode.engine import DecodeEngine
from l2ray.decode.policy import RequestPolicy
from l2ray.decode.segment import GREEDY, Sampling, SegmentLoop
from l2ray.decode.types import Completion, DecodeRequest, TokenStep
from l2ray.recipe import InterventionConfig


class LocalGenerator:
    """Chat conversations in, one `Completion` each, decoded as one batch (conversation i: seed + i)."""

    def __init__(self, model_path: str, device: str | None = None) -> None:
        self.engine = DecodeEngine.load(model_path, device=device)

    def generate(
        self,
        conversations: list[list[dict[str, str]]],
        intervention: InterventionConfig,
        max_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> list[Completion]:
        requests = [
            DecodeRequest(
                self.engine.codec.chat_prompt(messages),
                max_tokens=max_tokens,
                intervention=intervention,
                temperature=temperature,
                seed=seed + index,
            )
            for index, messages in enumerate(conversations)
        ]
        return self.engine.complete(requests)


class EngineBackend:
    """A `CompletionBackend` decoding in-process with no intervention (the segment loop's reference)."""

    def __init__(self, engine: DecodeEngine) -> None:
        self.engine = engine

    async def complete(
        self,
        prompt_ids: list[int],
        max_tokens: int,
        top_logprobs: int,
        logit_bias: dict[int, float],
        ignore_eos: bool = False,
        sampling: Sampling = GREEDY,
    ) -> tuple[list[TokenStep], str]:
        request = DecodeRequest(
            list(prompt_ids),
            max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed or 0,
            logit_bias=dict(logit_bias),
            logprobs=top_logprobs,
            ignore_eos=ignore_eos,
        )
        [steps] = self.engine.run([request])
        return [s for s in steps if not s.is_stop], steps[-1].finish_reason or "length"


@dataclass
class LoopResult:
    """What a whole segment loop produced: the tokens (no EOS), why it ended, how many calls it made."""

    tokens: list[int]
    finish_reason: str
    calls: int


async def run_segment_loop(
    backend: EngineBackend,
    prompt_ids: list[int],
    policy: RequestPolicy,
    max_tokens: int,
    chunk: int = 32,
    sampling: Sampling = GREEDY,
    logit_bias: dict[int, float] | None = None,
) -> LoopResult:
    """Run a `SegmentLoop` to the end and collect it."""
    loop = SegmentLoop(backend, prompt_ids, policy, max_tokens, chunk, sampling, logit_bias)
    steps = [step async for group in loop.stream() for step in group]
    return LoopResult([s.token for s in steps if not s.is_stop], steps[-1].finish_reason, loop.calls)


def make_switching_student(student_path, out_dir):
    """A copy of the student whose output rows for language tags are near that of its most likely
    token (untied from the input embeddings, so reading a tag does not make the next one certain)."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from l2ray.languages import LANGUAGES, tag_token

    shutil.copytree(student_path, out_dir, dirs_exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(student_path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(student_path)
    vocab = tokenizer.get_vocab()
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "1+1?"}], add_generation_prompt=True)
    with torch.no_grad():
        favourite = int(model(input_ids=torch.tensor([list(prompt["input_ids"])])).logits[0, -1].argmax())
    model.config.tie_word_embeddings = False
    rows = model.get_input_embeddings().weight.detach().clone()
    noise = torch.Generator().manual_seed(0)
    for token in [tag_token(c) for c in LANGUAGES if tag_token(c) in vocab]:
        rows[vocab[token]] = rows[favourite] * 0.95 + 0.05 * torch.randn(rows.shape[1], generator=noise)
    model.lm_head.weight = torch.nn.Parameter(rows)
    model.save_pretrained(out_dir)
    return out_dir
