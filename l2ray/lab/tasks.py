r"""The lab's task family: multi-step word problems whose answer is known by construction.

A problem is a person, an item, a starting count and 3–6 operations (gets / gives away a small
number). Its solution is a plan of *sentences* — ``(template key, slots)`` — that every language
renders the same way (`l2ray.lab.render`): a start, one step per operation, reflection turns that
re-verify a step by its inverse ("Wait, let me check step 2: $9 + 3 = 12$ …"), a conclusion and
the boxed answer. Which steps are re-checked follows from the problem's content, so a solution
written from a translated question has the same structure as the English one.

Example:
    >>> problem = make_problem("p", random.Random(0), min_ops=3, max_ops=3)
    >>> problem.answer == problem.values()[-1], len(problem.ops)
    (True, 3)
    >>> [key for key, _ in question_plan(problem)][:2]
    ['start', 'add']
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from l2ray.hashing import stable_id

MAX_COUNT = 20
"""No running total leaves 0..MAX_COUNT: every number the student writes is small."""
MAX_OPS = 6
"""The templates name operations by ordinal, first to sixth."""
NAMES = 6
ITEMS = 6

Sentence = tuple[str, dict[str, int]]
"""``(template key, slots)``: one sentence before rendering (slots are indices and numbers)."""


@dataclass(frozen=True)
class Op:
    """One operation: ``add`` (gets ``amount`` more) or ``sub`` (gives ``amount`` away)."""

    kind: Literal["add", "sub"]
    amount: int


@dataclass(frozen=True)
class WordProblem:
    """A person (``name`` index), an item (``item`` index), a start and operations."""

    id: str
    name: int
    item: int
    start: int
    ops: tuple[Op, ...]

    def values(self) -> list[int]:
        """The running total before the first and after every operation."""
        totals = [self.start]
        for op in self.ops:
            totals.append(totals[-1] + op.amount if op.kind == "add" else totals[-1] - op.amount)
        return totals

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def checked_steps(self) -> list[int]:
        """The steps (1-based) the solution re-verifies: about half of them, at least one, chosen by
        the problem's content (not its id), so every language's solution checks the same steps."""
        rng = random.Random(stable_id(repr((self.name, self.item, self.start, self.ops))))
        steps = list(range(1, len(self.ops) + 1))
        return sorted(rng.sample(steps, max(1, len(steps) // 2)))


def make_problem(problem_id: str, rng: random.Random, min_ops: int = 3, max_ops: int = 6) -> WordProblem:
    """A random problem with ``min_ops``..``max_ops`` operations; totals stay in 0..MAX_COUNT."""
    if not 1 <= min_ops <= max_ops <= MAX_OPS:
        raise ValueError(f"operations: need 1 <= min_ops <= max_ops <= {MAX_OPS}, got {min_ops}..{max_ops}")
    total = rng.randint(2, 9)
    start = total
    ops: list[Op] = []
    for _ in range(rng.randint(min_ops, max_ops)):
        can_add, can_sub = total < MAX_COUNT, total > 1
        kind = "add" if can_add and (not can_sub or rng.random() < 0.5) else "sub"
        limit = min(9, MAX_COUNT - total) if kind == "add" else min(9, total - 1)
        amount = rng.randint(1, limit)
        ops.append(Op(kind, amount))
        total = total + amount if kind == "add" else total - amount
    return WordProblem(problem_id, rng.randrange(NAMES), rng.randrange(ITEMS), start, tuple(ops))


def make_problems(split: str, count: int, seed: int, min_ops: int = 3, max_ops: int = 6) -> list[WordProblem]:
    """``count`` problems of one split (``seeds``, ``eval``, ``pretrain``, …); splits never share a
    problem id, and the same (split, seed) always gives the same problems."""
    return [
        make_problem(f"lab-{split}-{seed}-{i:05d}", random.Random(f"{split}/{seed}/{i}"), min_ops, max_ops)
        for i in range(count)
    ]


def question_plan(problem: WordProblem) -> list[Sentence]:
    """The question: the start, one sentence per operation, the ask."""
    who = {"name": problem.name, "item": problem.item}
    plan: list[Sentence] = [("start", {**who, "a": problem.start})]
    plan += [(op.kind, {**who, "s": step, "b": op.amount}) for step, op in enumerate(problem.ops, start=1)]
    plan.append(("ask", who))
    return plan


def solution_plan(
    problem: WordProblem, wrong_step: int | None = None, checked: list[int] | None = None
) -> list[Sentence]:
    """The chain of thought: start, steps with reflection turns, conclusion.

    ``wrong_step`` (1-based) makes that step's result off by one and carries the error on (what an
    erring teacher writes); the reflection of a wrong step then "confirms" the wrong number.
    ``checked``: the steps to re-verify (default `WordProblem.checked_steps`).
    """
    who = {"name": problem.name, "item": problem.item}
    plan: list[Sentence] = [("cot_start", {**who, "a": problem.start})]
    checked = set(problem.checked_steps() if checked is None else checked)
    total = problem.start
    for step, op in enumerate(problem.ops, start=1):
        result = total + op.amount if op.kind == "add" else total - op.amount
        if step == wrong_step:
            result += 1
        numbers = {"s": step, "a": total, "b": op.amount, "c": result}
        plan.append((f"cot_{op.kind}", {"name": problem.name, **numbers}))
        if step in checked:
            plan.append((f"check_{op.kind}", numbers))
        total = result
    plan.append(("cot_end", {**who, "c": total}))
    return plan


def response_plan(answer: int) -> list[Sentence]:
    """What follows the thinking: the answer in ``\\boxed{}``."""
    return [("resp", {"c": answer})]


__all__ = [
    "MAX_COUNT",
    "MAX_OPS",
    "Op",
    "Sentence",
    "WordProblem",
    "make_problem",
    "make_problems",
    "question_plan",
    "response_plan",
    "solution_plan",
]
