"""Helpers shared by the serve tests' fixtures and tests (a module name no other folder uses)."""

from __future__ import annotations

from trained_student import LANGS

from l2ray.languages import tag_token

API_KEY = "sk-l2ray-test-7f3a9c2e51"
MODEL_NAME = "l2ray-serve-test"


def first_tag(text: str) -> str | None:
    """The language of the first tag in ``text``."""
    positions = {code: text.find(tag_token(code)) for code in LANGS}
    found = {code: pos for code, pos in positions.items() if pos >= 0}
    return min(found, key=found.get) if found else None


def a_stop_string_from(text: str) -> tuple[str, str]:
    """A 3-character stop string from the second half of ``text``, and the text a stop there leaves."""
    candidates = (text[i : i + 3] for i in range(len(text) // 2, len(text) - 2))
    stop = next((c for c in candidates if c.isprintable() and c.strip()), None)
    assert stop, f"no printable stop string in {text!r}"
    return stop, text[: text.index(stop)]
