r"""The three teacher prompts of synthesis and the parsers of their replies.

Prompts are part of every request fingerprint (with ``synth.prompt_version``): change a prompt and
bump the version, or cached replies to the old prompt would be reused for the new one.

Example:
    >>> msgs = translate_fragment_messages("Wait, $x = 2$ fails. ", "fr")
    >>> msgs[-1]["content"].endswith("Wait, $x = 2$ fails.")
    True
    >>> parse_solution("<think>\nx = 2\n</think>\n\nSo \\boxed{2}.")
    ('x = 2', 'So \\boxed{2}.')
"""

from __future__ import annotations

from l2ray.languages import get_language
from l2ray.teacher.base import Message
from l2ray.text.boxed import last_boxed
from l2ray.thinking import THINK_END, THINK_START

_KEEP_MATH = (
    "Keep every mathematical expression, LaTeX command, number and variable name exactly as it is, "
    "character for character."
)


def translate_question_messages(question: str, lang: str) -> list[Message]:
    """Ask for ``question`` in language ``lang``, math unchanged, nothing but the translation."""
    language = get_language(lang)
    return [
        {"role": "system", "content": "You are a careful translator of mathematics and science problems."},
        {
            "role": "user",
            "content": (
                f"Translate the following problem into {language.name} ({lang}). {_KEEP_MATH} "
                "Return only the translated problem, with no comments.\n\n"
                f"Target language: {language.name} ({lang})\n\nProblem:\n{question.strip()}"
            ),
        },
    ]


def solve_messages(question: str, lang: str) -> list[Message]:
    r"""Ask for a long chain of thought in ``lang`` inside ``<think>``, then an answer with ``\boxed{}``."""
    language = get_language(lang)
    return [
        {
            "role": "system",
            "content": (
                f"Think step by step, only in {language.name} ({lang}), checking your work as you go. "
                f"Write the whole reasoning between {THINK_START} and {THINK_END}; after {THINK_END} write "
                f"a short final answer in {language.name} with the result in \\boxed{{}}."
            ),
        },
        {"role": "user", "content": f"{question.strip()}\n\n{language.reasoning_instruction}"},
    ]


def translate_fragment_messages(fragment: str, lang: str) -> list[Message]:
    """Ask for one chain-of-thought fragment in ``lang``; surrounding whitespace is not sent."""
    language = get_language(lang)
    return [
        {"role": "system", "content": "You translate fragments of a mathematical chain of thought."},
        {
            "role": "user",
            "content": (
                f"Translate this fragment of a chain of thought into {language.name} ({lang}). {_KEEP_MATH} "
                "Keep its voice: an interjection such as 'Wait' or 'Hmm' stays an interjection. "
                "Return only the translation, with no comments.\n\n"
                f"Target language: {language.name} ({lang})\n\nFragment:\n{fragment.strip()}"
            ),
        },
    ]


def parse_translation(text: str) -> str:
    """The translation in a reply: a reasoning model's ``<think>`` part dropped, whitespace stripped."""
    _, sep, after = text.rpartition(THINK_END)
    return (after if sep else text).strip()


def parse_solution(text: str) -> tuple[str, str]:
    r"""Split a solve reply into ``(cot, response)``.

    With ``</think>``: the text before it (an opening ``<think>`` removed) and the text after. Without:
    the last paragraph that holds a ``\boxed{}`` is the response, everything before it the chain of
    thought; a reply that is one paragraph is all chain of thought with an empty response.
    """
    head, sep, tail = text.partition(THINK_END)
    if sep:
        return head.replace(THINK_START, "", 1).strip(), tail.strip()
    paragraphs = [p for p in text.strip().split("\n\n") if p.strip()]
    for index in range(len(paragraphs) - 1, 0, -1):
        if last_boxed(paragraphs[index]) is not None:
            return "\n\n".join(paragraphs[:index]).strip(), "\n\n".join(paragraphs[index:]).strip()
    return text.strip(), ""


def restore_whitespace(source: str, translation: str) -> str:
    """``translation`` with the leading and trailing whitespace of ``source`` (fragments join exactly)."""
    body = source.strip()
    if not body:
        return source
    start = source.index(body)
    return source[:start] + translation.strip() + source[start + len(body) :]
