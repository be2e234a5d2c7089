"""Recipe section for the seed set."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from l2ray._schema import Section

FieldMapName = Literal["auto", "l2ray", "s1k", "bespoke", "limo"]


class SeedsConfig(Section):
    """Where the English long-CoT seeds come from.

    ``source`` is ``bundled`` (the seed set shipped with l2ray), ``bundled:NAME`` (another file shipped
    in ``l2ray/data``, e.g. ``bundled:lab_seeds.jsonl``), a ``.jsonl``/``.parquet`` file, a
    folder written by ``datasets.Dataset.save_to_disk``, or a Hugging Face hub id such as
    ``simplescaling/s1K``.
    """

    source: str = "bundled"
    format: Literal["auto", "jsonl", "parquet", "hf"] = "auto"
    field_map: FieldMapName | dict[str, str] = "auto"
    split: str = "train"
    revision: str | None = None
    limit: int | None = Field(default=None, ge=1)
    on_error: Literal["raise", "skip"] = "raise"
