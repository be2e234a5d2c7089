"""Split a long chain of thought into reflection fragments.

A fragment boundary sits right before a reflection marker ("Wait", "Hmm", "等等", …) that opens a
sentence or a line, and never inside math, ``\\boxed{}`` or code. Joining the fragments gives back
the original text exactly, so code-switching can translate fragments and reassemble the rest as is.

Example:
    >>> segment("So x = 2. Wait, x can be negative. Hmm, then x = -2.")
    ['So x = 2. ', 'Wait, x can be negative. ', 'Hmm, then x = -2.']
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Sequence
from functools import lru_cache

from l2ray.languages import LANGUAGES
from l2ray.text.spans import protected_spans

SENTENCE_END = ".!?。！？…"
_CLOSING = "\"'”’」』)）]*_"


def default_markers() -> tuple[str, ...]:
    """Reflection markers of every registered language (English first)."""
    seen: dict[str, None] = {}
    for lang in LANGUAGES.values():
        for marker in lang.reflection_markers:
            seen.setdefault(marker, None)
    return tuple(seen)


def segment(text: str, markers: Sequence[str] | None = None) -> list[str]:
    """Split ``text`` into fragments at reflection markers; ``"".join(result) == text``.

    Args:
        text: a chain of thought (any language, may contain LaTeX and code).
        markers: words that open a reflection turn; default `default_markers()`.

    Returns:
        The fragments, in order. Text with no boundary is one fragment; empty text gives ``[]``.
    """
    if not text:
        return []
    cuts = reflection_boundaries(text, markers)
    edges = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(edges)]


def reflection_boundaries(text: str, markers: Sequence[str] | None = None) -> list[int]:
    """Character offsets (> 0) where a new reflection fragment starts."""
    pattern = _marker_pattern(tuple(markers) if markers is not None else default_markers())
    spans = protected_spans(text)
    starts = [a for a, _ in spans]
    cuts: list[int] = []
    for match in pattern.finditer(text):
        start, end = match.start(), match.end()
        if start == 0 or _inside(spans, starts, start):
            continue
        if _continues_word(text, end, match.group()) or not _opens_sentence(text, start):
            continue
        cuts.append(start)
    return cuts


@lru_cache(maxsize=32)
def _marker_pattern(markers: tuple[str, ...]) -> re.Pattern[str]:
    if not markers:
        return re.compile(r"(?!x)x")  # matches nothing
    ordered = sorted(set(markers), key=len, reverse=True)  # "But wait" before "But"
    return re.compile("|".join(re.escape(m) for m in ordered))


def _inside(spans: list[tuple[int, int]], starts: list[int], index: int) -> bool:
    """Whether ``index`` falls strictly inside one of the sorted, disjoint ``spans`` (a bisection:
    a long CoT has hundreds of math spans and as many marker matches)."""
    at = bisect.bisect_left(starts, index) - 1  # the last span opening before index
    return at >= 0 and index < spans[at][1]


def _continues_word(text: str, end: int, marker: str) -> bool:
    """True when the match runs into a longer word ("Waiting", "음식"); CJK has no word spaces."""
    last = marker[-1]
    if end >= len(text) or not last.isalpha() or _is_cjk(last):
        return False
    return text[end].isalpha()


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return 0x3040 <= code <= 0x30FF or 0x3400 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF


def _opens_sentence(text: str, start: int) -> bool:
    i = start - 1
    while i >= 0 and text[i] in " \t\u3000":
        i -= 1
    if i < 0 or text[i] in "\n\r":
        return True
    while i >= 0 and text[i] in _CLOSING:
        i -= 1
    if i >= 0 and text[i] in SENTENCE_END:
        return True
    return text.endswith(("\\]", "$$"), 0, i + 1)
