"""Base class for recipe sections (unknown keys are errors, not silently ignored) and the one way
a failed validation is told to a person.

Example:
    >>> class Knobs(Section):
    ...     lr: float = 1e-5
    >>> try:
    ...     Knobs.model_validate({"lr": "fast", "l_r": 1})
    ... except Exception as exc:
    ...     print(format_validation_error(exc, "recipe r.yaml", Knobs))
    recipe r.yaml is invalid (2 problem(s)):
      lr: got 'fast' — Input should be a valid number, unable to parse string as a number
      l_r: unknown field. Did you mean 'lr'? Remove it or fix its spelling.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class Section(BaseModel):
    """A recipe section. Typos in a YAML key fail validation instead of being ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def format_validation_error(exc: ValidationError, what: str, root: type[BaseModel]) -> str:
    """One line per problem: ``field.path: got <value> — <what is allowed>`` (+ a spelling hint).

    ``what`` names the input (``recipe configs/demo.yaml``, ``build_app args``); ``root`` is the
    model that was validated, where spelling hints look up the known field names.
    """
    lines = [f"{what} is invalid ({exc.error_count()} problem(s)):"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "<top level>"
        got = err.get("input")
        if err["type"] == "extra_forbidden":
            hint = _spelling_hint(err["loc"], root)
            lines.append(f"  {where}: unknown field.{hint} Remove it or fix its spelling.")
            continue
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            lines.append(f"  {where}: required field is missing.")
        else:
            lines.append(f"  {where}: got {got!r} — {message}")
    return "\n".join(lines)


def _spelling_hint(loc: tuple[Any, ...], root: type[BaseModel]) -> str:
    model: Any = root
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return ""
        model = field.annotation
    known = list(getattr(model, "model_fields", {}))
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    return f" Did you mean {close[0]!r}?" if close else f" Allowed: {', '.join(known)}."
