"""The lab's base student: a tiny Qwen2 model pre-trained from scratch on raw lab text, on CPU.

Raw text is what a real base model has seen: word problems and their worked solutions in every lab
language, as plain prose — never the chat template, ``<think>``, language tags or a request to box
the answer. So the base knows the arithmetic and the languages but not the thinking format, and SFT
on k seeds has something to build on. Pre-training is deterministic (seeded init, data order and
dropout-free model, fixed thread count) and cached by fingerprint under
``$L2RAY_CACHE/lab/base-<fingerprint>/``: built once per machine, reused by every study and test.

Example:
    >>> path = ensure_base(BaseStudentConfig(steps=20))  # doctest: +SKIP
    >>> json.loads((path / BUILD_INFO).read_text())["final_loss"]  # doctest: +SKIP
    2.31
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
import uuid
from pathlib import Path

from l2ray.hashing import stable_id
from l2ray.lab.config import LAB_LANGUAGES, BaseStudentConfig
from l2ray.lab.render import TEMPLATES, render_text
from l2ray.lab.tasks import make_problems, question_plan, response_plan, solution_plan
from l2ray.languages import LANGUAGES

log = logging.getLogger(__name__)

BUILD_INFO = "l2ray_lab_base.json"
FORMAT_VERSION = "2"
"""Bump when the pre-training text or the build changes (part of the fingerprint); 2: unseen token
rows mean-initialised after pre-training."""


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$L2RAY_CACHE``, else ``~/.cache/l2ray`` (as student resolution uses)."""
    return Path(cache_dir or os.environ.get("L2RAY_CACHE") or Path.home() / ".cache" / "l2ray").resolve()


def base_fingerprint(config: BaseStudentConfig) -> str:
    """What decides the base's weights: its config, the templates and the text format version."""
    return stable_id(config.model_dump_json(), json.dumps(TEMPLATES, sort_keys=True), FORMAT_VERSION)


def ensure_base(config: BaseStudentConfig, cache_dir: str | Path | None = None, force: bool = False) -> Path:
    """The folder of the pre-trained base (built now unless the cache has it); loadable with
    ``from_pretrained`` and usable as ``student.model``."""
    target = cache_root(cache_dir) / "lab" / f"base-{base_fingerprint(config)}"
    if (target / BUILD_INFO).exists() and not force:
        return target
    staging = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        info = build_base(staging, config)
        info["fingerprint"] = base_fingerprint(config)
        (staging / BUILD_INFO).write_text(json.dumps(info, indent=2))
        if force:
            shutil.rmtree(target, ignore_errors=True)
        try:
            staging.rename(target)  # atomic: a concurrent builder's copy is as good as ours
        except OSError:
            if not (target / BUILD_INFO).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def pretraining_documents(config: BaseStudentConfig) -> list[str]:
    """Question + solution + answer prose, one document a problem, languages in turn."""
    problems = make_problems("pretrain", config.documents, config.seed)
    documents = []
    for index, problem in enumerate(problems):
        lang = LAB_LANGUAGES[index % len(LAB_LANGUAGES)]
        documents.append(
            "\n".join(
                render_text(plan, lang)
                for plan in (question_plan(problem), solution_plan(problem), response_plan(problem.answer))
            )
        )
    return documents


def build_base(out: Path, config: BaseStudentConfig) -> dict:
    """Initialise the student (tokenizer trained on the documents) and pre-train it into ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from l2ray.student.build import build_student

    documents = pretraining_documents(config)
    # The prompt's reasoning instructions are in the tokenizer's corpus too (not in the training
    # text): their words should be tokens, not bytes.
    corpus = documents + [lang.reasoning_instruction for lang in LANGUAGES.values()]
    build_student(out, config.shape, seed=config.seed, force=True, corpus=corpus)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    started = time.perf_counter()
    losses = pretrain(model, tokenizer, documents, config)
    reset_unseen_embeddings(model, tokenizer)
    model.save_pretrained(out)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "documents": len(documents),
        "steps": config.steps,
        "first_loss": round(losses[0], 4),
        "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4),
        "pretrain_s": round(time.perf_counter() - started, 1),
        "config": config.model_dump(),
    }


def pretrain(model, tokenizer, documents: list[str], config: BaseStudentConfig) -> list[float]:
    """Next-token loss on every token of the documents; returns the loss of each step."""
    import torch

    torch.manual_seed(config.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    eos = tokenizer.eos_token_id
    limit = config.shape.max_position_embeddings - 1
    encoded = [[*tokenizer.encode(d, add_special_tokens=False)[:limit], eos] for d in documents]
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    warmup = max(1, config.steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, config.steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    order = random.Random(config.seed)
    losses: list[float] = []
    model.train()
    try:
        for _ in range(config.steps):
            batch = order.sample(encoded, min(config.batch_size, len(encoded)))
            ids, labels = _padded(batch, tokenizer.pad_token_id)
            loss = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if len(losses) % 100 == 0:
                log.info("lab base: step %d/%d, loss %.3f", len(losses), config.steps, losses[-1])
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return losses


def reset_unseen_embeddings(model, tokenizer) -> list[str]:
    """Set the rows of the tokens raw text never holds (``<think>``, ``</think>``, the tags,
    ``<|im_start|>``) to the mean of the others, as `l2ray.student.tokens` initialises tokens it adds
    to a real base: pre-training only ever pushed their logits down, which SFT would first have to
    undo."""
    import torch

    from l2ray.student.build import IM_START
    from l2ray.student.tokens import reasoning_tokens

    unseen = [IM_START, *reasoning_tokens()]
    ids = torch.tensor(tokenizer.convert_tokens_to_ids(unseen))
    weight = model.get_input_embeddings().weight  # tied: the output layer is the same matrix
    keep = torch.ones(weight.shape[0], dtype=torch.bool)
    keep[ids] = False
    keep[tokenizer.pad_token_id] = False
    with torch.no_grad():
        weight[ids] = weight[keep].mean(dim=0, keepdim=True)
    return unseen


def _padded(batch: list[list[int]], pad_id: int):
    """Right-padded ids and labels (-100 on padding)."""
    import torch

    width = max(len(ids) for ids in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, seq in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, : len(seq)] = torch.tensor(seq)
    return ids, labels


__all__ = [
    "BUILD_INFO",
    "base_fingerprint",
    "build_base",
    "cache_root",
    "ensure_base",
    "pretraining_documents",
]
