"""The trace row: what synthesis writes and training reads (one Parquet row per trace).

``checks``, ``teacher`` and ``usage`` are JSON-encoded strings so every Parquet shard has the same
flat schema whatever a teacher or verifier reports.

Example:
    >>> row = TraceRow(id="t1", seed_id="s1", kind="original", question="1+1?", question_lang="en",
    ...                cot="<|lang:en|>1+1=2.", response="$\\\\boxed{2}$", answer="2", languages=["en"])
    >>> row.messages()[1]["content"].startswith("<think>\\n<|lang:en|>")
    True
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from l2ray.thinking import assistant_turn

TraceKind = Literal["original", "whole", "mixed"]
TRACE_COLUMNS = (
    "id",
    "seed_id",
    "kind",
    "question",
    "question_lang",
    "cot",
    "response",
    "answer",
    "languages",
    "checks",
    "teacher",
    "usage",
)


class TraceRow(BaseModel):
    """One training trace.

    Attributes:
        id: stable hash of seed id, kind, languages and the recipe fingerprint.
        cot: the tagged thinking text (starts with a language tag, a tag at every switch).
        response: what follows ``</think>``: the final answer with ``\\boxed{}``.
        answer: the gold answer of the seed.
        languages: the language of each fragment, in order.
        checks / teacher / usage: JSON strings (verification results, teacher model and request
            fingerprints, token usage).
    """

    id: str
    seed_id: str
    kind: TraceKind
    question: str
    question_lang: str
    cot: str
    response: str
    answer: str
    languages: list[str] = Field(min_length=1)
    checks: str = "{}"
    teacher: str = "{}"
    usage: str = "{}"

    def messages(self) -> list[dict[str, str]]:
        """The chat conversation the student is trained on (thinking block, then the answer)."""
        return [
            {"role": "user", "content": self.question},
            {"role": "assistant", "content": self.assistant_text()},
        ]

    def assistant_text(self) -> str:
        """The assistant turn: the thinking block, then the answer (`l2ray.thinking.assistant_turn`)."""
        return assistant_turn(self.cot, self.response)

    def decoded(self, name: Literal["checks", "teacher", "usage"]) -> dict[str, Any]:
        """One of the JSON columns as a dict."""
        return json.loads(getattr(self, name))
