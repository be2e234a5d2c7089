"""The thinking format, in one place: ``<think>`` … ``</think>``, then the answer.

A student writes ``<think>\\n<|lang:xx|>…\\n</think>\\n\\n<answer>``; the chat template's generation
prompt opens the block. Everything that reads or writes that format takes the markers from here.

Example:
    >>> split_thinking("<|lang:en|>hm</think>\\n\\nSo 4.")
    ('<|lang:en|>hm', 'So 4.', True)
    >>> split_thinking("<think>still going")
    ('still going', '', False)
"""

from __future__ import annotations

THINK_START = "<think>"
THINK_END = "</think>"


def split_thinking(text: str, opened: bool = True) -> tuple[str, str, bool]:
    """``(thinking, answer, closed)``: the text before and after ``</think>`` (a leading ``<think>`` is
    dropped). Without ``</think>`` everything is thinking and ``closed`` is False — unless the
    generation did not begin inside a thinking block (``opened=False``: a model whose prompt opened
    none) and the text neither opens nor closes one: then it is all answer.

    >>> split_thinking("Paris.", opened=False)
    ('', 'Paris.', True)
    """
    body = text.lstrip()
    if body.startswith(THINK_START):
        body = body[len(THINK_START) :]
    elif not opened and THINK_END not in body:
        return "", body.strip(), True
    thinking, sep, answer = body.partition(THINK_END)
    if not sep:
        return body.strip(), "", False
    return thinking.strip(), answer.strip(), True


def assistant_turn(cot: str, response: str) -> str:
    """``<think>\\n{cot}\\n</think>\\n\\n{response}``: the assistant text a student is trained on.

    >>> assistant_turn("<|lang:en|>2+2=4.", "\\\\boxed{4}")
    '<think>\\n<|lang:en|>2+2=4.\\n</think>\\n\\n\\\\boxed{4}'
    """
    return f"{THINK_START}\n{cot}\n{THINK_END}\n\n{response}"


__all__ = ["THINK_END", "THINK_START", "assistant_turn", "split_thinking"]
