"""The student as training sees it: load, add reasoning tokens, wrap in LoRA, checkpoint, export.

No Ray import. A checkpoint folder holds ``model/`` (the full model, or the LoRA adapter, with the
tokenizer), ``trainer_state.pt`` (optimizer and scheduler) and ``l2ray_state.json`` (the global
step and what the driver needs to export the final model).

Example:
    >>> model, tokenizer, added = load_for_training("runs/s", "lora", LoraConfig())  # doctest: +SKIP
    >>> model, tokenizer = export_model("runs/demo/train/ray/.../checkpoint_000001")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from l2ray.recipe import LoraConfig
from l2ray.student.tokens import ensure_reasoning_tokens

MODEL_DIR = "model"
TRAINER_STATE = "trainer_state.pt"
STATE_FILE = "l2ray_state.json"


def load_for_training(
    base_path: str,
    mode: str,
    lora: LoraConfig,
    checkpoint_dir: str | Path | None = None,
) -> tuple[Any, Any, list[str]]:
    """The trainable model, its tokenizer and the reasoning tokens that were added to the base.

    From a checkpoint, the full model (or the base plus the saved adapter) is restored instead.
    Weights are float32 whatever the checkpoint's dtype (transformers 5 loads ``dtype="auto"``, i.e.
    bf16 for most published students): the optimizer keeps fp32 masters and bf16 is autocast only.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if checkpoint_dir is not None:
        state = read_state(checkpoint_dir)
        saved = Path(checkpoint_dir) / MODEL_DIR
        tokenizer = AutoTokenizer.from_pretrained(saved)
        if state["mode"] == "full":
            model = AutoModelForCausalLM.from_pretrained(saved, dtype=torch.float32)
            return model, tokenizer, state["added_tokens"]
        from peft import PeftModel

        base = _base_with_vocab(state["base_path"], len(tokenizer), torch.float32)
        return PeftModel.from_pretrained(base, saved, is_trainable=True), tokenizer, state["added_tokens"]
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    added = ensure_reasoning_tokens(tokenizer, model)
    if mode == "lora":
        model = wrap_lora(model, lora, train_embeddings=bool(added))
    return model, tokenizer, added


def training_tokenizer(base_path: str) -> Any:
    """The base tokenizer with the reasoning tokens training adds (the same on every rank, every
    attempt and the driver, which plans packed steps with it)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_path)
    ensure_reasoning_tokens(tokenizer)
    return tokenizer


def wrap_lora(model: Any, lora: LoraConfig, train_embeddings: bool) -> Any:
    """Add LoRA adapters; with ``train_embeddings`` the embedding and output layers train in full.

    New tag rows start at the mean embedding and only become distinct if those layers learn, which
    LoRA on the attention/MLP projections alone cannot do.
    """
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    modules_to_save = None
    tied = False
    if train_embeddings:
        modules_to_save = [_module_name(model, model.get_input_embeddings())]
        output = model.get_output_embeddings()
        if output is not None:
            modules_to_save.append(_module_name(model, output))
            tied = output.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    config = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        modules_to_save=modules_to_save,
        ensure_weight_tying=tied,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def save_checkpoint(
    folder: str | Path,
    model: Any,
    tokenizer: Any,
    trainer_state: dict[str, Any],
    state: dict[str, Any],
    state_dict: dict[str, Any] | None = None,
) -> Path:
    """Write one checkpoint folder (see the module docstring) and return it.

    ``state`` must hold ``step``, ``mode``, ``base_path`` and ``added_tokens``; ``state_dict`` is
    the gathered full state when the model is sharded (FSDP).
    """
    import torch

    folder = Path(folder)
    model.save_pretrained(folder / MODEL_DIR, state_dict=state_dict)
    tokenizer.save_pretrained(folder / MODEL_DIR)
    torch.save(trainer_state, folder / TRAINER_STATE)
    (folder / STATE_FILE).write_text(json.dumps(state, indent=2))
    return folder


def read_state(checkpoint_dir: str | Path) -> dict[str, Any]:
    """The ``l2ray_state.json`` of a checkpoint (global step, mode, base path, added tokens)."""
    return json.loads((Path(checkpoint_dir) / STATE_FILE).read_text())


def read_trainer_state(checkpoint_dir: str | Path) -> dict[str, Any]:
    """Optimizer and scheduler state of a checkpoint (the loop reseeds every step, so no RNG state)."""
    import torch

    return torch.load(Path(checkpoint_dir) / TRAINER_STATE, map_location="cpu", weights_only=False)


def export_model(checkpoint_dir: str | Path) -> tuple[Any, Any]:
    """The final, standalone model of a checkpoint and its tokenizer, ready to log.

    LoRA adapters are merged into the base (``merge_and_unload``): MLflow's transformers flavor
    reloads a logged PEFT model with freshly initialised adapters, so only merged weights survive the
    round trip.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    state = read_state(checkpoint_dir)
    saved = Path(checkpoint_dir) / MODEL_DIR
    tokenizer = AutoTokenizer.from_pretrained(saved)
    if state["mode"] == "full":
        return AutoModelForCausalLM.from_pretrained(saved), tokenizer
    from peft import PeftModel

    base = _base_with_vocab(state["base_path"], len(tokenizer), "auto")  # the base's own dtype
    merged = PeftModel.from_pretrained(base, saved).merge_and_unload()
    return merged, tokenizer


def _base_with_vocab(base_path: str, vocab_size: int, dtype: Any) -> Any:
    """The base model grown to the training tokenizer as training grew it (rows come from the adapter).

    Like `ensure_reasoning_tokens`, it never cuts a padded embedding matrix down to the tokenizer.
    """
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    if base.get_input_embeddings().weight.shape[0] < vocab_size:
        base.resize_token_embeddings(vocab_size, mean_resizing=False)
    return base


def _module_name(model: Any, module: Any) -> str:
    """The leaf name of ``module`` inside ``model`` (``embed_tokens``, ``lm_head``): peft's key."""
    for name, candidate in model.named_modules():
        if candidate is module:
            return name.rsplit(".", 1)[-1]
    raise ValueError(f"{type(module).__name__} is not a submodule of {type(model).__name__}")
