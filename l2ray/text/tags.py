"""Language tags inside a thinking trace: insert at switches, parse, strip.

A tagged trace starts with the tag of its first language and carries a tag at every switch:

    >>> insert_tags([("en", "So x = 2. "), ("zh", "等等，x 可以是负数。"), ("zh", "所以 x = -2。")])
    '<|lang:en|>So x = 2. <|lang:zh|>等等，x 可以是负数。所以 x = -2。'
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from l2ray.languages import TAG_PATTERN, tag_token


def insert_tags(fragments: Sequence[tuple[str, str]], lead: bool = True) -> str:
    """Join ``(language, text)`` fragments, with a tag before the first and at every switch.

    Consecutive fragments in the same language are joined without a tag in between.
    """
    out: list[str] = []
    previous: str | None = None
    for index, (code, text) in enumerate(fragments):
        if code != previous and (lead or index > 0):
            out.append(tag_token(code))
        out.append(text)
        previous = code
    return "".join(out)


def parse_tagged(text: str, default: str | None = None) -> list[tuple[str | None, str]]:
    """Split a tagged trace into ``(language, text)`` pairs.

    Text before the first tag gets ``default``; empty pieces are dropped, so
    ``insert_tags(parse_tagged(t)) == t`` for any trace that starts with a tag and never repeats the
    tag it is already in.
    """
    pieces: list[tuple[str | None, str]] = []
    current, last = default, 0
    for match in TAG_PATTERN.finditer(text):
        if match.start() > last:
            pieces.append((current, text[last : match.start()]))
        current, last = match.group(1), match.end()
    if last < len(text):
        pieces.append((current, text[last:]))
    return pieces


def strip_tags(text: str) -> str:
    """Remove every language tag."""
    return TAG_PATTERN.sub("", text)


def tag_languages(text: str) -> list[str]:
    """The language codes of the tags in ``text``, in order (duplicates kept)."""
    return TAG_PATTERN.findall(text)


def count_tag_switches(text: str) -> int:
    """How many tags change the language (the leading tag is not a switch)."""
    codes = tag_languages(text)
    return sum(1 for a, b in itertools.pairwise(codes) if a != b)
