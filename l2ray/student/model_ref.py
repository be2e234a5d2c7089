"""`ModelRef`: which model a stage uses, pinned to a registry version when it has one (an evaluation
records it; the serve graph passes it to every replica, so all of them load the same version).

Example:
    >>> resolve_model("builtin:tiny", "sqlite:////tmp/unused.db")
    ModelRef(uri='builtin:tiny', name=None, version=None, run_id=None)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelRef:
    """The evaluated model: its URI and, for registry models, name, version and run."""

    uri: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {"uri": self.uri, "name": self.name, "version": self.version, "run_id": self.run_id}


def resolve_model(uri: str, tracking_uri: str) -> ModelRef:
    """Pin ``models:/NAME@alias`` to its version (the alias may move during the run); others as given."""
    if not uri.startswith("models:/"):
        return ModelRef(uri)
    from l2ray.student.resolve import registered_version

    _, version = registered_version(uri, tracking_uri)
    name = version.name
    return ModelRef(f"models:/{name}/{version.version}", name, str(version.version), version.run_id)


__all__ = ["ModelRef", "resolve_model"]
