r"""A programmatic teacher for the lab: deterministic, offline, wrong at a set rate.

It answers synthesis's three requests (`l2ray.synth.prompts`, version v1) by parsing the lab text in
them (`l2ray.lab.render`) instead of by reasoning: a question or a fragment is parsed and rendered in
the target language; a whole-CoT request is parsed into its problem, solved by construction and
written in the language asked for. Anything else is a `TeacherError` (``unparseable``).

Mistakes, so verification has something real to reject, come at the rates in the model name
(``lab-teacher?wrong_step=0.1&wrong_answer=0.05&off_language=0.05``), drawn from a hash of the
request, so the same request always gets the same (right or wrong) reply:

- ``wrong_step``: a whole CoT with one step off by one (the answer follows it: ``wrong_answer``);
  a fragment with a changed number (``fragment_math``);
- ``wrong_answer``: a whole CoT whose boxed answer is off by one;
- ``off_language``: a whole CoT whose second half stays English (``language_share``), a fragment
  left in English (``fragment_language``), a question left in English (``question_language``).

Example:
    >>> import asyncio
    >>> from l2ray.teacher.base import SamplingParams
    >>> teacher = LabTeacher("lab-teacher")
    >>> msgs = [{"role": "user", "content": "Translate … into German (de). …\n\nProblem:\nMia has 7 apples."}]
    >>> asyncio.run(teacher.complete(msgs, SamplingParams(0.0, 1.0, 64))).text
    'Mia hat 7 Äpfel.'
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from l2ray.hashing import stable_id
from l2ray.lab.render import LAB_LANGUAGES, LabTextError, parse_text, render_text, translate_text
from l2ray.lab.tasks import Op, WordProblem, response_plan, solution_plan
from l2ray.teacher.base import Message, SamplingParams, TeacherError, TeacherReply, Usage
from l2ray.thinking import THINK_END, THINK_START

ERROR_KINDS = ("wrong_step", "wrong_answer", "off_language")
_LANG_CODE = re.compile(r"\(([a-z]{2,3})\)")
_TOKEN = re.compile(r"\w+|[^\w\s]")


class LabTeacher:
    """The Teacher protocol over the lab's renderers. ``model`` names it and its error rates."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.rates = error_rates(model)

    async def complete(
        self, messages: list[Message], params: SamplingParams, fingerprint: str | None = None
    ) -> TeacherReply:
        prompt = "\n".join(m["content"] for m in messages)
        try:
            text = self._answer(messages)
        except LabTextError as exc:
            raise TeacherError("unparseable", str(exc)) from None
        return TeacherReply(text, Usage(count_tokens(prompt), count_tokens(text)))

    async def aclose(self) -> None:
        return None

    def _answer(self, messages: list[Message]) -> str:
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        user = messages[-1]["content"]
        lang = _target_language(system if THINK_START in system else user)
        error = self._error(messages)
        if THINK_START in system:  # whole CoT: the user turn is the question, then the instruction
            return self._solve(user.split("\n\n")[0], lang, error)
        for marker in ("\n\nProblem:\n", "\n\nFragment:\n"):
            if marker in user:
                source = user.split(marker, 1)[1].strip()
                if error == "off_language":
                    return source
                text = translate_text(source, lang)
                return _change_a_number(text) if error == "wrong_step" and "Fragment" in marker else text
        raise LabTextError(f"not a lab synthesis request: {user[:80]!r}")

    def _solve(self, question: str, lang: str, error: str | None) -> str:
        problem = problem_from_question(question)
        plan = solution_plan(problem, wrong_step=1 if error == "wrong_step" else None)
        answer = int(plan[-1][1]["c"]) + (1 if error == "wrong_answer" else 0)
        if error == "off_language":
            half = len(plan) // 2
            cot = render_text(plan[:half], lang) + "\n" + render_text(plan[half:], "en")
        else:
            cot = render_text(plan, lang)
        return f"{THINK_START}\n{cot}\n{THINK_END}\n\n{render_text(response_plan(answer), lang)}"

    def _error(self, messages: list[Message]) -> str | None:
        """The mistake this request gets, if any (a fixed draw per request)."""
        draw = int(stable_id(self.model, repr(messages)), 16) / 16**16
        edge = 0.0
        for kind in ERROR_KINDS:
            edge += self.rates.get(kind, 0.0)
            if draw < edge:
                return kind
        return None


def error_rates(model: str) -> dict[str, float]:
    """The rates in ``lab-teacher?wrong_step=0.1&…``; unknown keys or bad values raise."""
    _, _, query = model.partition("?")
    rates = {}
    for key, value in parse_qsl(query, strict_parsing=bool(query)):
        if key not in ERROR_KINDS:
            raise LabTextError(f"teacher.model {model!r}: unknown error kind {key!r}; use {ERROR_KINDS}")
        try:
            rates[key] = float(value)
        except ValueError:
            raise LabTextError(f"teacher.model {model!r}: {key}={value!r} is not a number") from None
    if any(r < 0 for r in rates.values()) or sum(rates.values()) > 1:
        raise LabTextError(f"teacher.model {model!r}: rates must be >= 0 and sum to at most 1")
    return rates


def problem_from_question(question: str) -> WordProblem:
    """The problem a rendered question (any lab language) states."""
    _, plan = parse_text(question)
    if len(plan) < 3 or plan[0][0] != "start" or plan[-1][0] != "ask":
        raise LabTextError(f"not a lab question: {question[:80]!r}")
    start = plan[0][1]
    ops = tuple(Op(key, slots["b"]) for key, slots in plan[1:-1] if key in ("add", "sub"))
    if len(ops) != len(plan) - 2:
        raise LabTextError(f"a lab question holds only operations between start and ask: {question[:80]!r}")
    return WordProblem("parsed", start["name"], start["item"], start["a"], ops)


def count_tokens(text: str) -> int:
    """A tokenizer-free token estimate for usage: words, and every CJK character and sign apart."""
    return len(_TOKEN.findall(text)) + sum(1 for ch in text if "\u3040" <= ch <= "\u9fff")


def _target_language(text: str) -> str:
    for code in _LANG_CODE.findall(text):
        if code in LAB_LANGUAGES:
            return code
    raise LabTextError(f"the request names no lab language ({', '.join(LAB_LANGUAGES)}): {text[:80]!r}")


def _change_a_number(text: str) -> str:
    """The first number inside math one higher: a translation that changed the math."""
    return re.sub(r"\$(\d+)", lambda m: f"${int(m.group(1)) + 1}", text, count=1)


__all__ = ["ERROR_KINDS", "LabTeacher", "count_tokens", "error_rates", "problem_from_question"]
