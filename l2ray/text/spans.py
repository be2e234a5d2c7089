"""Protected spans: math, boxed answers and code that no text operation may cut or translate.

Example:
    >>> protected_spans(r"so $x=1$ and \\boxed{2}")
    [(3, 8), (13, 22)]
"""

from __future__ import annotations

import re

_OPENERS = re.compile(r"```|\$\$|\\\[|\\\(|\\boxed\{|\$")
_CLOSERS = {"```": "```", "$$": "$$", "\\[": "\\]", "\\(": "\\)", "$": "$"}


def protected_spans(text: str) -> list[tuple[int, int]]:
    """Return sorted, non-overlapping ``(start, end)`` spans of math, ``\\boxed{}`` and code fences.

    Recognised: fenced code (three backticks), ``$$…$$``, ``\\[…\\]``, ``\\(…\\)``, ``$…$`` (an escaped
    ``\\$`` is a dollar sign, not math) and ``\\boxed{…}`` with nested braces. An opener without its
    closer protects the rest of the text: cutting inside unfinished math is worse than not cutting.
    """
    spans: list[tuple[int, int]] = []
    pos = 0
    while True:
        match = _OPENERS.search(text, pos)
        if match is None:
            return spans
        start, opener = match.start(), match.group()
        if opener.startswith("$") and _is_escaped(text, start):
            pos = start + 1
            continue
        end = (
            _boxed_end(text, match.end()) if opener == "\\boxed{" else _closer_end(text, match.end(), opener)
        )
        spans.append((start, end))
        pos = end


def math_segments(text: str) -> list[str]:
    """The text of every protected span, in order (used to check that translation kept the math)."""
    return [text[a:b] for a, b in protected_spans(text)]


def strip_protected(text: str, replacement: str = " ") -> str:
    """Replace every protected span with ``replacement`` (language detection ignores math)."""
    out, last = [], 0
    for a, b in protected_spans(text):
        out.append(text[last:a])
        out.append(replacement)
        last = b
    out.append(text[last:])
    return "".join(out)


def _is_escaped(text: str, index: int) -> bool:
    backslashes = 0
    while index - backslashes - 1 >= 0 and text[index - backslashes - 1] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


def _closer_end(text: str, search_from: int, opener: str) -> int:
    closer = _CLOSERS[opener]
    pos = search_from
    while True:
        found = text.find(closer, pos)
        if found == -1:
            return len(text)
        if closer == "$" and _is_escaped(text, found):
            pos = found + 1
            continue
        return found + len(closer)


def _boxed_end(text: str, search_from: int) -> int:
    depth = 1
    for i in range(search_from, len(text)):
        char = text[i]
        if char == "{" and not _is_escaped(text, i):
            depth += 1
        elif char == "}" and not _is_escaped(text, i):
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)
