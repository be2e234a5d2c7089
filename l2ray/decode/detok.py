"""Streaming detokenization and the thinking/answer split of generated text.

`IncrementalDecoder` turns token ids into text deltas without re-decoding the whole sequence and
without emitting half a UTF-8 character; `ThinkingSplitter` routes the text before ``</think>``
to ``reasoning`` and the rest (leading whitespace dropped) to ``content``.

Example:
    >>> splitter = ThinkingSplitter(thinking=True)
    >>> splitter.feed("<|lang:en|>x=2.</think>\\n\\nThe answer"), splitter.feed(" is 2.")
    (('<|lang:en|>x=2.', 'The answer'), ('', ' is 2.'))
"""

from __future__ import annotations

from typing import Any

from l2ray.student.tokens import THINK_END


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
