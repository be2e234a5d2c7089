"""What travels through Ray Data between the planner, the teacher actors and the verifiers: one
`SynthTask` per trace to build, typed once when it is planned and read back once per process.

A Ray Data row holds plain columns, so a task crosses as one JSON string (`SynthTask.to_row` /
`SynthTask.from_row`, and `group_row` / `tasks_of` for the teacher stage's groups); inside a
process it is the model, never a dict.

Example:
    >>> seed = SeedRow(id="s", source="t", question="1+1?", cot="So 2.", answer="2")
    >>> task = SynthTask(id="t1", kind="whole", languages=["zh"], seed=seed)
    >>> SynthTask.from_row(task.to_row()) == task, task.seed_id
    (True, 's')
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from l2ray.data.seeds import SeedRow
from l2ray.traces import TraceKind


class SynthTask(BaseModel):
    """One trace to build.

    Args:
        id: the id of the trace it becomes (see `l2ray.synth.task_plan.expand_seed`).
        kind: ``original``, ``whole`` (one language) or ``mixed`` (a language per fragment).
        index: which of the seed's mixed traces (0 for the others).
        languages: the trace's language (``whole``) or each fragment's (``mixed``); ``["en"]`` for
            the original.
        seed: the seed row the trace is built from.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    kind: TraceKind
    index: int = Field(default=0, ge=0)
    languages: list[str] = Field(min_length=1)
    seed: SeedRow

    @property
    def seed_id(self) -> str:
        return self.seed.id

    def to_row(self) -> str:
        """The task as one Ray Data column value."""
        return self.model_dump_json()

    @classmethod
    def from_row(cls, value: str | bytes) -> SynthTask:
        """The task back from `to_row`'s string (Ray Data may hand it over as bytes)."""
        return cls.model_validate_json(value)


_GROUP = TypeAdapter(list[SynthTask])


def group_row(group: list[SynthTask]) -> dict[str, str]:
    """A group of tasks (`l2ray.synth.task_plan.group_tasks`) as the teacher stage's input row."""
    return {"tasks": _GROUP.dump_json(group).decode()}


def tasks_of(value: str | bytes) -> list[SynthTask]:
    """The tasks of a `group_row`'s ``tasks`` value."""
    return _GROUP.validate_json(value)
