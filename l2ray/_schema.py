"""Base class for recipe sections: unknown keys are errors, not silently ignored."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A recipe section. Typos in a YAML key fail validation instead of being ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
