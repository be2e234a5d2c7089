import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from l2ray.languages import LANGUAGES
from l2ray.student.build import BUILD_INFO, build_student
from l2ray.student.tokens import ensure_reasoning_tokens, tag_token_ids


def test_student_reloads_with_tags_template_and_generates(student_path):
    tokenizer = AutoTokenizer.from_pretrained(student_path)
    model = AutoModelForCausalLM.from_pretrained(student_path)
    assert model.config.model_type == "qwen2"
    info = json.loads((student_path / BUILD_INFO).read_text())
    assert 100_000 < info["parameters"] < 10_000_000
    ids = tag_token_ids(tokenizer)
    assert len(set(ids.values())) == len(LANGUAGES)
    for code, token_id in ids.items():
        assert tokenizer.tokenize(f"<|lang:{code}|>") == [f"<|lang:{code}|>"]
        assert tokenizer.decode([token_id]) == f"<|lang:{code}|>"
    messages = [{"role": "user", "content": "What is $2+3$?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": "<think>\nx</think>\n\\boxed{5}"}], tokenize=False
    )
    assert full.startswith(prompt.removesuffix("<think>\n"))
    encoded = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**encoded, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > encoded["input_ids"].shape[1]


def test_build_is_reused_when_nothing_changed(student_path):
    before = (student_path / "model.safetensors").stat().st_mtime_ns
    assert build_student(student_path) == student_path
    assert (student_path / "model.safetensors").stat().st_mtime_ns == before


def test_ensure_reasoning_tokens_adds_missing_tags_with_mean_embeddings(student_path):
    tokenizer = AutoTokenizer.from_pretrained(student_path)
    model = AutoModelForCausalLM.from_pretrained(student_path)
    assert ensure_reasoning_tokens(tokenizer, model) == []
    # A tokenizer that lacks a language: pretend "xx" is registered by asking for its tag directly.
    added = ensure_reasoning_tokens(tokenizer, model, codes=["zh", "xx"])
    assert added == ["<|lang:xx|>"]
    embeddings = model.get_input_embeddings().weight
    assert embeddings.shape[0] == len(tokenizer)
    assert torch.allclose(embeddings[-1], embeddings[:-1].mean(dim=0), atol=1e-6)


def test_new_tags_take_the_mean_of_the_known_vocabulary_on_a_padded_matrix(student_path):
    """Like Qwen2.5 (151,936 rows, 151,665 tokens): the new ids reuse padding rows, nothing shrinks."""
    tokenizer = AutoTokenizer.from_pretrained(student_path)
    model = AutoModelForCausalLM.from_pretrained(student_path)
    known = len(tokenizer)
    model.resize_token_embeddings(known + 64, mean_resizing=False)  # 64 untrained padding rows
    with torch.no_grad():
        model.get_input_embeddings().weight[known:] = 100.0  # would drag a mean over all rows away

    added = ensure_reasoning_tokens(tokenizer, model, codes=["zh", "xx", "yy"])
    assert added == ["<|lang:xx|>", "<|lang:yy|>"]
    embeddings = model.get_input_embeddings().weight
    assert embeddings.shape[0] == known + 64  # not cut down to len(tokenizer)
    new_ids = tokenizer.convert_tokens_to_ids(added)
    assert all(known <= i < known + 64 for i in new_ids)
    mean = embeddings[:known].mean(dim=0)
    assert all(torch.allclose(embeddings[i], mean, atol=1e-6) for i in new_ids)
    assert bool((embeddings[known + 2 :] == 100.0).all())  # the remaining padding rows are untouched
