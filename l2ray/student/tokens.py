"""The special tokens a reasoning student needs: ``<think>``, ``</think>`` and one tag per language.

`ensure_reasoning_tokens` adds whichever a tokenizer lacks, initialises the new embedding rows from
the mean of the existing ones (random rows would make the first steps of training noisy) and makes
the chat template's generation prompt open the thinking (`open_thinking`), as it does for a real
checkpoint (SmolLM2, Qwen2.5) whose tokenizer and template know nothing of thinking. Added as
special tokens, they leave the tokenization of every other string as it was.

Example:
    >>> from transformers import AutoTokenizer  # doctest: +SKIP
    >>> tokenizer = AutoTokenizer.from_pretrained(resolve_student("builtin:smollm2"))  # doctest: +SKIP
    >>> ensure_reasoning_tokens(tokenizer)[:3]  # doctest: +SKIP
    ['<think>', '</think>', '<|lang:en|>']
"""

from __future__ import annotations

from typing import Any

from l2ray.languages import LANGUAGES, tag_token
from l2ray.thinking import THINK_END, THINK_START


def reasoning_tokens(codes: list[str] | None = None) -> list[str]:
    """``<think>``, ``</think>`` and the tag of each language (default: every registered one)."""
    return [THINK_START, THINK_END, *(tag_token(c) for c in (codes or list(LANGUAGES)))]


def missing_reasoning_tokens(tokenizer: Any, codes: list[str] | None = None) -> list[str]:
    """Reasoning tokens that are not single tokens of ``tokenizer`` yet."""
    vocab = tokenizer.get_vocab()
    return [t for t in reasoning_tokens(codes) if t not in vocab]


def ensure_reasoning_tokens(
    tokenizer: Any, model: Any | None = None, codes: list[str] | None = None
) -> list[str]:
    """Add missing reasoning tokens as special tokens; grow and mean-initialise ``model`` if given.

    The new rows start at the mean of the rows of the tokenizer's existing vocabulary. Many models
    carry more embedding rows than their tokenizer has tokens (Qwen2.5: 151,936 rows for 151,665
    tokens), so the new ids may already have (untrained) rows: the matrix is only ever grown, never
    cut down to ``len(tokenizer)``, and the padding rows are left out of the mean.

    Returns the tokens that were added (empty when the tokenizer already had them all).
    """
    added = missing_reasoning_tokens(tokenizer, codes)
    open_thinking(tokenizer)
    if not added:
        return []
    known = len(tokenizer)
    tokenizer.add_special_tokens({"extra_special_tokens": added}, replace_extra_special_tokens=False)
    if model is not None:
        import torch

        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        new_ids = torch.tensor(tokenizer.convert_tokens_to_ids(added))
        with torch.no_grad():
            for embedding in _embedding_matrices(model):
                embedding[new_ids] = embedding[:known].mean(dim=0, keepdim=True)
    return added


def open_thinking(tokenizer: Any) -> bool:
    """Make the chat template's generation prompt end inside ``<think>`` (``True`` when it was changed).

    The student's thinking block then opens in the prompt, wherever the template is applied (l2ray's
    codec, a vLLM server, a client's own rendering), and training's loss starts after it. Templates
    emit the generation prompt last, so ``<think>`` followed by a newline goes after it; a template that
    already mentions ``<think>`` is left alone.
    """
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str) or THINK_START in template:
        return False
    tokenizer.chat_template = template + "{% if add_generation_prompt %}" + THINK_START + "\n{% endif %}"
    return True


def tag_token_ids(tokenizer: Any, codes: list[str] | None = None) -> dict[str, int]:
    """Token id of each language's tag; raises with the missing tags when the tokenizer lacks some."""
    vocab = tokenizer.get_vocab()
    codes = codes or list(LANGUAGES)
    missing = [tag_token(c) for c in codes if tag_token(c) not in vocab]
    if missing:
        raise ValueError(
            f"tokenizer lacks the language tags {missing}; add them with "
            "l2ray.student.tokens.ensure_reasoning_tokens (training does this) before decoding with tags"
        )
    return {c: vocab[tag_token(c)] for c in codes}


def _embedding_matrices(model: Any) -> list[Any]:
    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(output.weight)
    return matrices
