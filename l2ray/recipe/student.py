"""Recipe section for the student model."""

from __future__ import annotations

from pydantic import Field

from l2ray._schema import Section

BUILTIN_STUDENT = "builtin:tiny"
LAB_STUDENT = "builtin:lab"
"""The lab's pre-trained base, shipped in ``l2ray/data/lab_base`` (docs/lab.md)."""


class StudentConfig(Section):
    """The model to fine-tune and serve.

    ``model`` is ``builtin:tiny`` (built offline by `l2ray student build`), ``builtin:lab`` (the lab's
    pre-trained base, shipped), a local path, a Hugging
    Face id (e.g. ``Qwen/Qwen2.5-7B-Instruct``) or an MLflow URI (``models:/NAME@alias``). The size
    fields only shape the built-in student.
    """

    model: str = BUILTIN_STUDENT
    vocab_size: int = Field(default=4096, ge=512, le=65536)
    hidden_size: int = Field(default=128, ge=16)
    intermediate_size: int = Field(default=384, ge=16)
    num_hidden_layers: int = Field(default=4, ge=1)
    num_attention_heads: int = Field(default=4, ge=1)
    num_key_value_heads: int = Field(default=2, ge=1)
    max_position_embeddings: int = Field(default=4096, ge=128)
