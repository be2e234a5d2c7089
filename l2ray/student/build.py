"""Build the embedded default student offline: a tiny Qwen2 model and a BPE tokenizer with tags.

The model is randomly initialised (no weights can be downloaded here) but every code path that a real
student takes — chat template, special tokens, `save_pretrained`, `AutoModelForCausalLM` — is real.

Example:
    >>> path = build_student("runs/demo/student")  # doctest: +SKIP
    >>> AutoModelForCausalLM.from_pretrained(path)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from l2ray.data.seeds import bundled_file
from l2ray.hashing import stable_id
from l2ray.languages import LANGUAGES
from l2ray.recipe import StudentConfig
from l2ray.student.tokens import reasoning_tokens

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
BUILD_INFO = "l2ray_student.json"

# ChatML, with the generation prompt opening the thinking block: the student always starts thinking,
# and the rendered prompt is a prefix of the rendered training conversation (loss masking relies on it).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think>\\n' }}{% endif %}"
)


def build_student(
    out_dir: str | Path,
    config: StudentConfig | None = None,
    seed: int = 0,
    force: bool = False,
    corpus: list[str] | None = None,
) -> Path:
    """Train the tokenizer, initialise the model, save both to ``out_dir`` and return the path.

    ``corpus`` (default: every text shipped with the package) is what the tokenizer is trained on.
    A folder that already holds a student built from the same corpus, shape and seed is reused
    unless ``force``.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = config or StudentConfig()
    out = Path(out_dir).resolve()
    corpus = corpus if corpus is not None else list(_corpus_texts())
    fingerprint = stable_id(json.dumps(config.model_dump(), sort_keys=True), str(seed), *corpus)
    info_path = out / BUILD_INFO
    if not force and info_path.exists() and json.loads(info_path.read_text())["fingerprint"] == fingerprint:
        return out

    tokenizer = train_tokenizer(corpus, config.vocab_size)
    torch.manual_seed(seed)
    model_config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids(IM_START),
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN),
    )
    model = Qwen2ForCausalLM(model_config)
    model.generation_config.eos_token_id = [model_config.eos_token_id, model_config.pad_token_id]
    model.generation_config.pad_token_id = model_config.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {
        "fingerprint": fingerprint,
        "seed": seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "config": config.model_dump(),
    }
    info_path.write_text(json.dumps(info, indent=2))
    return out


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on ``texts``, with ChatML, think and language-tag specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [PAD_TOKEN, IM_START, IM_END, *reasoning_tokens()]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        extra_special_tokens=specials[3:],
        model_max_length=StudentConfig().max_position_embeddings,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _corpus_texts() -> Iterator[str]:
    """Every text shipped with the package: seeds, the mini eval set, recorded teacher output, and
    each language's instructions and markers (so every script is seen by the BPE merges)."""
    for lang in LANGUAGES.values():
        yield " ".join(
            [lang.native_name, lang.reasoning_instruction, *lang.reflection_markers, *lang.answer_anchors]
        )
    names = ["seeds.jsonl", "mini_eval.jsonl"]
    recorded = bundled_file("recorded")
    if recorded.is_dir():
        names += [f"recorded/{p.name}" for p in sorted(recorded.glob("*.jsonl"))]
    for name in names:
        path = bundled_file(name)
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                yield from (v for v in json.loads(line).values() if isinstance(v, str))
