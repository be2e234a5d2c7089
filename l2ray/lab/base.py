"""The lab's base student: a tiny Qwen2 model pre-trained from scratch on raw lab text, on CPU.

Raw text is what a real base model has seen: word problems and their worked solutions in every lab
language, as plain prose — never the chat template, ``<think>``, language tags or a request to box
the answer. So the base knows the arithmetic and the languages but not the thinking format, and SFT
on k seeds has something to build on. Pre-training is deterministic (seeded init, data order and
dropout-free model, fixed thread count). The default base is shipped in the package
(``l2ray/data/lab_base/``, 3.7 MB; made by ``l2ray lab --base-only --out l2ray/data/lab_base``, about
20 minutes on 2 cores); any other configuration is built once per machine into
``$L2RAY_CACHE/lab/base-<fingerprint>/`` and reused by every study and test.

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
from functools import partial
from pathlib import Path

from l2ray.console import progress
from l2ray.data.seeds import bundled_file
from l2ray.errors import L2rayError
from l2ray.hashing import stable_id
from l2ray.lab.config import LAB_LANGUAGES, BaseStudentConfig
from l2ray.lab.render import TEMPLATES, render_text
from l2ray.lab.tasks import make_problems, question_plan, response_plan, solution_plan
from l2ray.languages import LANGUAGES

log = logging.getLogger(__name__)

BUILD_INFO = "l2ray_lab_base.json"
FORMAT_VERSION = "4"
"""Bump when the pre-training text or the build changes (part of the fingerprint); 2: unseen token
rows mean-initialised after pre-training; 3: operations named by ordinals in question and solution;
4: documents packed into rows."""
SHIPPED = bundled_file("lab_base")
"""The base built with the default `BaseStudentConfig`, shipped so no machine pre-trains it again."""


class LabBaseError(L2rayError, ValueError):
    """A lab base that cannot be built as asked (where it would go, or too little text for a row)."""


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$L2RAY_CACHE``, else ``~/.cache/l2ray`` (as student resolution uses)."""
    return Path(cache_dir or os.environ.get("L2RAY_CACHE") or Path.home() / ".cache" / "l2ray").resolve()


def base_fingerprint(config: BaseStudentConfig) -> str:
    """What decides the base's weights: its config, the templates and the text format version."""
    return stable_id(config.model_dump_json(), json.dumps(TEMPLATES, sort_keys=True), FORMAT_VERSION)


def ensure_base(
    config: BaseStudentConfig,
    cache_dir: str | Path | None = None,
    force: bool = False,
    out: str | Path | None = None,
) -> Path:
    """The folder of the pre-trained base: the shipped one when it was built from ``config``, else the
    cache's (built now unless the cache has it), or ``out`` when given (built there, e.g. to ship it,
    replacing a lab base of another fingerprint; any other non-empty folder is refused before the
    build). Loadable with ``from_pretrained`` and usable as ``student.model``."""
    fingerprint = base_fingerprint(config)
    if out is None and not force and shipped_fingerprint() == fingerprint:
        return SHIPPED
    target = Path(out).resolve() if out else cache_root(cache_dir) / "lab" / f"base-{fingerprint}"
    found = _fingerprint_at(target)
    if found == fingerprint and not force:
        return target
    if found is None and target.exists() and any(target.iterdir()):
        raise LabBaseError(
            f"--out {target}: a non-empty folder that holds no lab base ({BUILD_INFO}); name an empty "
            "or new folder, or a lab base's folder to replace"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        info = build_base(staging, config)
        info["fingerprint"] = fingerprint
        (staging / BUILD_INFO).write_text(json.dumps(info, indent=2))
        if force or found is not None:
            shutil.rmtree(target, ignore_errors=True)
        try:
            staging.rename(target)  # atomic: a concurrent builder's copy is as good as ours
        except OSError:
            if _fingerprint_at(target) != fingerprint:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def shipped_fingerprint() -> str | None:
    """The fingerprint of the base shipped in the package (``None`` when none is)."""
    return _fingerprint_at(SHIPPED)


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
    """Next-token loss on every token of the documents, packed into rows (`packed_rows`); returns
    the loss of each step."""
    import torch

    torch.manual_seed(config.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    encoded = [tokenizer.encode(d, add_special_tokens=False) for d in documents]
    rows = packed_rows(encoded, tokenizer.eos_token_id, config.seq_len, config.seed)
    if not rows:
        raise LabBaseError(
            f"base.documents ({config.documents}) make {sum(map(len, encoded))} tokens, less than one row "
            f"of base.seq_len ({config.seq_len}); raise base.documents or lower base.seq_len"
        )
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(_warmup_cosine, steps=config.steps))
    order = random.Random(config.seed)
    losses: list[float] = []
    model.train()
    try:
        with progress(config.steps, "pre-training the lab base") as bar:
            for _ in range(config.steps):
                ids = torch.tensor(order.sample(rows, min(config.batch_size, len(rows))))
                loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                bar.advance(1, f"loss {losses[-1]:.3f}")
                if len(losses) % 100 == 0:
                    log.info("lab base: step %d/%d, loss %.3f", len(losses), config.steps, losses[-1])
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return losses


def packed_rows(encoded: list[list[int]], eos: int, seq_len: int, seed: int) -> list[list[int]]:
    """The documents in a seeded order, each closed by ``eos``, cut into rows of ``seq_len`` tokens.

    Packed, a document starts anywhere in a row, after the end of another: the base learns to find the
    question it is solving by its content, not at position 0 (a base trained on one document a row
    fails once anything precedes the question — a chat template, say).

    >>> packed_rows([[1, 2], [3, 4, 5], [6]], eos=0, seq_len=4, seed=0)
    [[1, 2, 0, 6], [0, 3, 4, 5]]
    """
    order = list(range(len(encoded)))
    random.Random(seed).shuffle(order)
    stream = [token for index in order for token in (*encoded[index], eos)]
    return [stream[i : i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]


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


def _warmup_cosine(step: int, steps: int) -> float:
    """Linear warm-up over the first 5 % of ``steps``, then a cosine decay to 0."""
    warmup = max(1, steps // 20)
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _fingerprint_at(folder: Path) -> str | None:
    """The fingerprint of the lab base in ``folder`` (``None`` when it holds none)."""
    try:
        return json.loads((folder / BUILD_INFO).read_text())["fingerprint"]
    except (OSError, ValueError, KeyError):
        return None


__all__ = [
    "BUILD_INFO",
    "SHIPPED",
    "LabBaseError",
    "base_fingerprint",
    "build_base",
    "cache_root",
    "ensure_base",
    "packed_rows",
    "pretraining_documents",
    "shipped_fingerprint",
]
