r"""Find ``\boxed{…}`` answers in model output.

Example:
    >>> last_boxed(r"first \boxed{1}, then \boxed{\frac{1}{2}}")
    '\\frac{1}{2}'
"""

from __future__ import annotations

import re

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def all_boxed(text: str) -> list[str]:
    r"""Contents of every complete ``\boxed{…}`` (nested braces allowed), in order."""
    found = []
    for match in _BOXED.finditer(text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    found.append(text[start:i].strip())
                    break
    return found


def last_boxed(text: str) -> str | None:
    r"""The last complete ``\boxed{…}`` content, or ``None`` (an unclosed box does not count)."""
    boxes = all_boxed(text)
    return boxes[-1] if boxes else None
