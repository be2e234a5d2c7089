"""The data mix: read synthesized traces, check them, and select the rows a recipe asks for.

Everything here runs on the driver before any Ray worker starts, so a bad dataset fails in seconds
with a message that names the file, row and field. No Ray import.

Example:
    >>> rows = read_traces("runs/demo/synth/traces")  # doctest: +SKIP
    >>> mix = select_mix(rows, MixConfig(kinds=["original", "mixed"]), ["zh", "ja"], seed=0)  # doctest: +SKIP
    >>> mix.summary()["rows_per_kind"]  # doctest: +SKIP
    {'mixed': 10, 'original': 10}
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from l2ray.errors import L2rayError
from l2ray.hashing import stable_id
from l2ray.languages import LANGUAGES
from l2ray.recipe import MixConfig
from l2ray.text.tags import tag_languages
from l2ray.traces import TRACE_COLUMNS, TraceRow


class TrainDataError(L2rayError, ValueError):
    """Training data that cannot be used; raised before any worker starts."""


@dataclass(frozen=True)
class Mix:
    """The rows chosen for training, how they were chosen, and their fingerprint."""

    rows: list[TraceRow]
    available: int
    config: MixConfig
    languages: list[str]
    seed_ids: list[str]

    @cached_property
    def fingerprint(self) -> str:
        """Stable hash of the chosen rows' ids and contents (order-independent)."""
        return stable_id(*sorted(stable_id(r.model_dump_json()) for r in self.rows))

    def summary(self) -> dict[str, Any]:
        """Counts per kind, language and seed, plus every chosen row id: what MLflow records."""
        return {
            "fingerprint": self.fingerprint,
            "rows": len(self.rows),
            "available_rows": self.available,
            "mix": self.config.model_dump(),
            "languages": self.languages,
            "rows_per_kind": dict(sorted(Counter(r.kind for r in self.rows).items())),
            "rows_per_language": dict(
                sorted(Counter(code for r in self.rows for code in sorted(set(r.languages))).items())
            ),
            "seeds": self.seed_ids,
            "row_ids": sorted(r.id for r in self.rows),
        }

    def training_records(self) -> list[dict[str, str]]:
        """One ``{id, question, assistant}`` record per row: what the workers tokenize."""
        return [{"id": r.id, "question": r.question, "assistant": r.assistant_text()} for r in self.rows]


def rank_share(records: list[dict[str, Any]], rank: int, world: int) -> list[dict[str, Any]]:
    """Worker ``rank``'s records: every ``world``-th by id, so the shares are fixed, disjoint and
    together hold every record (Ray Data's ``streaming_split`` hands blocks out as workers ask and
    drops the remainder for equal shares; a resumed run must see the same rows).

    >>> [r["id"] for r in rank_share([{"id": i} for i in "edcba"], 1, 2)]
    ['b', 'd']
    """
    ordered = sorted(records, key=lambda record: record["id"])
    return ordered[rank::world]


def read_traces(traces_dir: str | Path) -> list[TraceRow]:
    """Read every ``*.parquet`` shard of ``traces_dir`` into validated `TraceRow`s.

    Raises `TrainDataError` naming the file (and row, field) when the folder is empty, a shard lacks
    a TraceRow column, a row fails validation, a language is not registered, or ids repeat.
    """
    import pyarrow.parquet as pq

    folder = Path(traces_dir)
    shards = sorted(folder.glob("*.parquet"))
    if not shards:
        raise TrainDataError(
            f"no trace shards (*.parquet) in {folder}; run `l2ray synth` first or pass the folder "
            "that holds the synthesized traces"
        )
    rows: list[TraceRow] = []
    where: dict[str, str] = {}
    for shard in shards:
        table = pq.read_table(shard)
        missing = [c for c in TRACE_COLUMNS if c not in table.column_names]
        if missing:
            raise TrainDataError(
                f"{shard}: missing column(s) {missing}; a trace shard needs the TraceRow columns "
                f"{list(TRACE_COLUMNS)} (l2ray/traces.py). Re-run synthesis or add the columns."
            )
        for index, record in enumerate(table.select(list(TRACE_COLUMNS)).to_pylist()):
            row = _validated(record, f"{shard}, row {index}")
            if row.id in where:
                raise TrainDataError(f"{shard}, row {index}: id {row.id!r} repeats {where[row.id]}")
            where[row.id] = f"{shard}, row {index}"
            rows.append(row)
    return rows


def select_mix(rows: list[TraceRow], config: MixConfig, recipe_languages: list[str], seed: int) -> Mix:
    """Apply the recipe's mix: kinds, languages, seeds, ratios, cap. Raises when nothing is left."""
    languages = config.languages or ["en", *[c for c in recipe_languages if c != "en"]]
    allowed = set(languages)
    kept = [r for r in rows if r.kind in config.kinds and {r.question_lang, *r.languages} <= allowed]
    seed_ids = sorted({r.seed_id for r in kept})
    if config.max_seeds is not None and len(seed_ids) > config.max_seeds:
        seed_ids = sorted(random.Random(seed).sample(seed_ids, config.max_seeds))
        chosen_seeds = set(seed_ids)
        kept = [r for r in kept if r.seed_id in chosen_seeds]
    if config.ratios:
        kept = _apply_ratios(kept, config.ratios, seed)
    if config.max_rows is not None and len(kept) > config.max_rows:
        kept = random.Random(seed).sample(kept, config.max_rows)
    if not kept:
        raise TrainDataError(
            f"the mix selects 0 of {len(rows)} rows (kinds {config.kinds}, languages {languages}, "
            f"max_seeds {config.max_seeds}, ratios {config.ratios}); the data has kinds "
            f"{dict(Counter(r.kind for r in rows))} and languages "
            f"{sorted({c for r in rows for c in (r.question_lang, *r.languages)})}. "
            "Widen train.mix or synthesize the missing kinds/languages."
        )
    kept.sort(key=lambda r: r.id)
    return Mix(rows=kept, available=len(rows), config=config, languages=languages, seed_ids=seed_ids)


def _validated(record: dict[str, Any], where: str) -> TraceRow:
    try:
        row = TraceRow.model_validate(record)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise TrainDataError(f"{where}: not a valid trace row ({problems})") from None
    for field, codes in (
        ("question_lang", [row.question_lang]),
        ("languages", row.languages),
        ("cot", tag_languages(row.cot)),
    ):
        unknown = sorted({c for c in codes if c not in LANGUAGES})
        if unknown:
            raise TrainDataError(
                f"{where} (id {row.id!r}), field {field!r}: language(s) {unknown} are not in the "
                f"registry ({', '.join(LANGUAGES)}); register them in l2ray/languages.py or drop the row"
            )
    for name in ("checks", "teacher", "usage"):
        try:
            json.loads(getattr(row, name))
        except json.JSONDecodeError:
            raise TrainDataError(f"{where} (id {row.id!r}), field {name!r}: not a JSON string") from None
    return row


def _apply_ratios(rows: list[TraceRow], ratios: dict[str, float], seed: int) -> list[TraceRow]:
    """The largest subset whose kind shares follow ``ratios`` with no row used twice."""
    by_kind = {kind: sorted((r for r in rows if r.kind == kind), key=lambda r: r.id) for kind in ratios}
    total_share = sum(ratios.values())
    shares = {kind: share / total_share for kind, share in ratios.items()}
    # The scarcest kind (relative to its share) bounds the total.
    total = min(len(by_kind[kind]) / share for kind, share in shares.items())
    rng = random.Random(seed)
    chosen: list[TraceRow] = []
    for kind, share in shares.items():
        count = min(len(by_kind[kind]), round(total * share))
        chosen.extend(rng.sample(by_kind[kind], count))
    return chosen
