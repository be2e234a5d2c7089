"""Fixtures for the training tests: a small trace dataset in the TraceRow schema, built from the
bundled seeds (synthesis is a separate stage), and recipes sized for 2 CPU workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from l2ray.data.seeds import load_seeds
from l2ray.recipe import Recipe, recipe_from_dict
from l2ray.text.tags import insert_tags
from l2ray.traces import TraceRow

# Hand-made multilingual pieces (a whole-CoT row and code-switched rows) in registered languages.
_ZH_REFLECTION = "等等，让我再检查一下这个结果。"
_FR_COT = "Calculons pas à pas. On a $2+3=5$. Vérifions : $5-3=2$, donc c'est correct."


def trace_rows() -> list[TraceRow]:
    """One ``original`` row per bundled seed, a ``mixed`` row for the first three, one ``whole`` row."""
    seeds = load_seeds().rows
    rows = [
        TraceRow(
            id=f"{seed.id}-original",
            seed_id=seed.id,
            kind="original",
            question=seed.question,
            question_lang="en",
            cot=insert_tags([("en", seed.cot)]),
            response=seed.final_response(),
            answer=seed.answer,
            languages=["en"],
        )
        for seed in seeds
    ]
    for seed in seeds[:3]:
        head, _, tail = seed.cot.partition("\n\n")
        rows.append(
            TraceRow(
                id=f"{seed.id}-mixed",
                seed_id=seed.id,
                kind="mixed",
                question=seed.question,
                question_lang="en",
                cot=insert_tags([("en", head + "\n\n"), ("zh", _ZH_REFLECTION + "\n\n"), ("en", tail)]),
                response=seed.final_response(),
                answer=seed.answer,
                languages=["en", "zh", "en"],
            )
        )
    rows.append(
        TraceRow(
            id="fr-whole-1",
            seed_id=seeds[0].id,
            kind="whole",
            question="Combien font $2+3$ ?",
            question_lang="fr",
            cot=insert_tags([("fr", _FR_COT)]),
            response="La réponse est $\\boxed{5}$.",
            answer="5",
            languages=["fr"],
        )
    )
    return rows


def write_traces(folder: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` as one Parquet shard in ``folder`` (the synthesis output layout)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "part-0000.parquet")
    return folder


@pytest.fixture
def rows() -> list[TraceRow]:
    return trace_rows()


@pytest.fixture
def traces_dir(tmp_path) -> Path:
    return write_traces(tmp_path / "traces", [r.model_dump() for r in trace_rows()])


@pytest.fixture(name="write_traces")
def write_traces_fixture():
    """`write_traces` for tests (test modules cannot import conftest helpers by module path)."""
    return write_traces


@pytest.fixture
def make_recipe(tmp_path):
    """``make_recipe(name, tracking_uri=None, **train)``: `small_recipe` under this test's tmp_path."""
    return lambda name, tracking_uri=None, **train: small_recipe(tmp_path, name, tracking_uri, **train)


def small_recipe(tmp_path: Path, name: str, tracking_uri: str | None = None, **train: Any) -> Recipe:
    """A recipe for a few steps of the offline student on 2 CPU workers (0.5 CPU each)."""
    settings = {
        "lr": 1e-3,
        "warmup_ratio": 0.0,
        "lr_schedule": "constant",
        "max_steps": 6,
        "batch_size": 2,
        "max_seq_len": 192,
        "num_workers": 2,
        "cpus_per_worker": 0.5,
        "checkpoint_every": 2,
        "keep_checkpoints": 2,
        "max_failures": 1,
    } | train
    raw = {
        "name": name,
        "output_dir": str(tmp_path / "runs"),
        "languages": ["zh", "fr"],
        "student": {"model": "builtin:tiny"},
        "train": settings,
        "tracking": {"tracking_uri": tracking_uri},
    }
    return recipe_from_dict(raw)
