"""Students the benchmarks run on: the offline tiny student, a random-init model of Qwen2.5-0.5B's
shape (weights do not matter to a throughput or memory figure; shapes do), or SmolLM2-135M-Instruct
(real weights and a real 49k BPE vocabulary, `builtin:smollm2`) with the reasoning vocabulary added
as training adds it, so the intervention has tags to act on."""

from __future__ import annotations

from pathlib import Path

QWEN25_05B = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": True,
}
SIZES = ("tiny", "qwen2.5-0.5b", "smollm2")


def build_student_of_size(size: str, folder: Path) -> str:
    """The offline tiny student, a random-init model of Qwen2.5-0.5B's shape with its tokenizer, or
    SmolLM2 with the reasoning vocabulary."""
    from l2ray.student.resolve import resolve_student

    if size == "smollm2":
        return _with_reasoning_vocabulary(resolve_student("builtin:smollm2"), folder)
    tiny = resolve_student("builtin:tiny", cache_dir=folder.parent / "cache")
    if size == "tiny":
        return tiny
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny)  # ids stay < 4096: only the shapes matter here
    torch.manual_seed(0)
    config = Qwen2Config(
        **QWEN25_05B,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
    )
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _with_reasoning_vocabulary(base: str, folder: Path) -> str:
    """``base`` with ``<think>``, ``</think>`` and the tags added (rows at the mean), saved to ``folder``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from l2ray.student.tokens import ensure_reasoning_tokens

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    ensure_reasoning_tokens(tokenizer, model)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
