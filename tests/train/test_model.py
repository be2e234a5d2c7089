"""The student for training: LoRA wrapping when tags were added, and student URI resolution."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM

from l2ray.recipe import LoraConfig
from l2ray.student.resolve import StudentNotFoundError, resolve_student
from l2ray.train.model import wrap_lora


def test_lora_trains_embeddings_only_when_tokens_were_added(student_path):
    lora = LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"])

    plain = wrap_lora(AutoModelForCausalLM.from_pretrained(student_path), lora, train_embeddings=False)
    trainable = {name for name, p in plain.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)

    with_tags = wrap_lora(AutoModelForCausalLM.from_pretrained(student_path), lora, train_embeddings=True)
    trainable = {name for name, p in with_tags.named_parameters() if p.requires_grad}
    assert "base_model.model.model.embed_tokens.modules_to_save.default.weight" in trainable
    # The student ties its output layer to the embeddings: the tie must hold for the trained copy.
    inner = with_tags.base_model.model
    trained = inner.model.embed_tokens.modules_to_save["default"].weight
    assert inner.lm_head.modules_to_save["default"].weight.data_ptr() == trained.data_ptr()


def test_resolve_student_forms_and_errors(tmp_path, student_path):
    assert resolve_student("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert resolve_student(str(student_path)) == str(student_path.resolve())
    with pytest.raises(StudentNotFoundError, match=r"no config\.json"):
        resolve_student(str(tmp_path))
    with pytest.raises(StudentNotFoundError, match="not a folder, not an HF id"):
        resolve_student("./no-such-student")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(StudentNotFoundError, match="name=absent not found"):
        resolve_student("models:/absent@candidate", tracking_uri=tracking, cache_dir=tmp_path / "cache")
