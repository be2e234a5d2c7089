"""Streaming detokenization and the thinking/answer split of generated text.

`IncrementalDecoder` turns token ids into text deltas without re-decoding the whole sequence and
without emitting half a UTF-8 character; `ThinkingSplitter` routes the text before ``</think>``
to ``reasoning`` and the rest (leading whitespace dropped) to ``content``; `StopStrings` cuts the
content before the first stop string, never emitting any part of one.

Example:
    >>> splitter = ThinkingSplitter(thinking=True)
    >>> splitter.feed("<|lang:en|>x=2.</think>\\n\\nThe answer"), splitter.feed(" is 2.")
    (('<|lang:en|>x=2.', 'The answer'), ('', ' is 2.'))
"""

from __future__ import annotations

from typing import Any

from l2ray.thinking import THINK_END


class IncrementalDecoder:
    """Decode token ids one batch at a time into text deltas (special tokens kept)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self._prefix = 0
        self._read = 0

    def push(self, tokens: list[int]) -> str:
        """Append tokens; return the text they complete (may be empty while a character is split)."""
        self.tokens.extend(tokens)
        prefix_text = self._decode(self._prefix, self._read)
        text = self._decode(self._prefix, len(self.tokens))
        if text.endswith("\ufffd") or len(text) <= len(prefix_text):
            return ""
        self._prefix, self._read = self._read, len(self.tokens)
        return text[len(prefix_text) :]

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        prefix_text = self._decode(self._prefix, self._read)
        text = self._decode(self._prefix, len(self.tokens))
        self._prefix = self._read = len(self.tokens)
        return text[len(prefix_text) :]

    def _decode(self, start: int, end: int) -> str:
        return self.tokenizer.decode(self.tokens[start:end], skip_special_tokens=False)


class ThinkingSplitter:
    """Split streamed text into ``(reasoning, content)`` deltas at the first ``</think>``."""

    def __init__(self, thinking: bool) -> None:
        self.thinking = thinking
        self._pending = ""
        self._started_content = False

    def feed(self, delta: str) -> tuple[str, str]:
        """The reasoning and content parts of a text delta."""
        if not self.thinking:
            return "", self._content(delta)
        text = self._pending + delta
        index = text.find(THINK_END)
        if index >= 0:
            self.thinking = False
            self._pending = ""
            return text[:index], self._content(text[index + len(THINK_END) :])
        # Keep a possible partial "</think>" at the end until the next delta decides.
        keep = next((n for n in range(len(THINK_END) - 1, 0, -1) if text.endswith(THINK_END[:n])), 0)
        self._pending = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep], ""

    def finish(self) -> tuple[str, str]:
        """Flush a held-back partial marker (it was text after all)."""
        pending, self._pending = self._pending, ""
        return (pending, "") if self.thinking else ("", self._content(pending))

    def _content(self, text: str) -> str:
        if not self._started_content:
            text = text.lstrip()
            self._started_content = bool(text)
        return text


class StopStrings:
    """OpenAI ``stop``: pass streamed text through until it contains a stop string, which is cut off.

    Text that could be the start of a stop string is held back until the next delta decides, so a
    stream never shows a stop string or a piece of one; `flush` releases it when generation ends.

    Example:
        >>> stops = StopStrings(["\\n\\n"])
        >>> stops.feed("x = 2.\\n"), stops.hit, stops.feed("\\nMore"), stops.hit
        ('x = 2.', False, '', True)
    """

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.hit = False
        self._pending = ""

    def feed(self, delta: str) -> str:
        """The part of ``delta`` that is safe to emit; sets `hit` once a stop string has appeared."""
        if self.hit:
            return ""
        text = self._pending + delta
        found = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if found:
            self.hit, self._pending = True, ""
            return text[: min(found)]
        keep = max((self._overlap(text, s) for s in self.stops), default=0)
        self._pending = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """Held-back text at the end of generation (it was no stop string after all)."""
        pending, self._pending = self._pending, ""
        return "" if self.hit else pending

    @staticmethod
    def _overlap(text: str, stop: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of ``stop``."""
        return next((n for n in range(min(len(stop) - 1, len(text)), 0, -1) if text.endswith(stop[:n])), 0)
