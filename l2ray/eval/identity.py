"""What an evaluation is, for comparing it with others: its fingerprint (everything that decides the
numbers), the hash that says two evaluations were made the same way, its seed, its label and the
``summary.json`` that carries them with the results.
"""

from __future__ import annotations

import json
import re
from typing import Any

from l2ray.clock import utc_iso
from l2ray.eval.benchmarks import BenchmarkData
from l2ray.eval.metrics import summarise
from l2ray.eval.tasks import PROMPT_VERSION, SEEDING_VERSION
from l2ray.grading import GRADER_VERSION
from l2ray.hashing import stable_id
from l2ray.recipe import InterventionConfig, Recipe
from l2ray.student.model_ref import ModelRef


def eval_fingerprint(
    recipe: Recipe,
    ref: ModelRef,
    endpoint: str | None,
    datasets: list[BenchmarkData],
    seed: int,
    configurations: dict[str, InterventionConfig],
    served_model: str | None = None,
) -> dict[str, Any]:
    """Everything that decides the numbers: model, engine, sampling, configurations, data, prompt, grader.

    ``served_model`` is the model name the endpoint was asked for (``None`` in-process): the endpoint,
    not the URI, decides which weights answered, so the report records both.
    """
    cfg = recipe.eval
    return {
        "model": ref.to_dict(),
        "engine": {
            "kind": "http" if endpoint else _local_kind(cfg.engine),
            "endpoint": endpoint,
            "served_model": served_model,
        },
        "sampling": {
            "temperature": cfg.temperature,
            "max_tokens": cfg.max_tokens,
            "samples": cfg.samples,
            "seed": seed,
            "limit": cfg.limit,
        },
        "configurations": {name: c.model_dump() for name, c in configurations.items()},
        "datasets": [d.identity() for d in datasets],
        "prompt": PROMPT_VERSION if cfg.instruction else f"{PROMPT_VERSION}-bare",
        "seeding": SEEDING_VERSION,
        "grader": GRADER_VERSION,
    }


def comparable_hash(fingerprint: dict[str, Any]) -> str:
    """Hash of the fingerprint without the model and the endpoint address: equal hashes mean two models
    were evaluated the same way (same data, sampling, configurations, engine kind, prompt, seeding and
    grader).

    ``eval.concurrency`` is not part of it: every sample is drawn with its own seed
    (`l2ray.eval.tasks.sample_seed`), so the batch size changes how fast an evaluation runs, not what
    it generates.
    """
    same = {k: v for k, v in fingerprint.items() if k != "model"}
    same["engine"] = {"kind": fingerprint["engine"]["kind"]}
    return stable_id(json.dumps(same, sort_keys=True))


def eval_seed(recipe: Recipe) -> int:
    """The evaluation's sampling seed: ``eval.seed``, else the recipe's."""
    return recipe.eval.seed if recipe.eval.seed is not None else recipe.seed


def evaluation_summary(
    label: str, endpoint: str | None, fingerprint: dict[str, Any], records: list[dict[str, Any]]
) -> dict[str, Any]:
    """The ``summary.json`` of an evaluation: what was evaluated how, and the results per benchmark."""
    return {
        "label": label,
        "created": utc_iso(),
        "endpoint": endpoint,
        "fingerprint": fingerprint,
        "fingerprint_hash": stable_id(json.dumps(fingerprint, sort_keys=True)),
        "comparable_hash": comparable_hash(fingerprint),
        "results": summarise(records),
    }


def default_label(ref: ModelRef, endpoint: str | None) -> str:
    """``demo-v3`` for a registry model, else a slug of the URI; ``-http`` when served."""
    base = f"{ref.name}-v{ref.version}" if ref.name else ref.uri
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-")[-60:] or "model"
    return f"{slug}-http" if endpoint else slug


def _local_kind(engine: str) -> str:
    """The fingerprint's engine kind in-process ("local" stays the transformers engine's name)."""
    return "vllm" if engine == "vllm" else "local"


__all__ = [
    "comparable_hash",
    "default_label",
    "eval_fingerprint",
    "eval_seed",
    "evaluation_summary",
]
