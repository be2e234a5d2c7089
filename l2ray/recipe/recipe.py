"""The recipe: the sections together in one validated schema, loaded from YAML with dotted overrides.

Example:
    >>> recipe = load_recipe("configs/demo.yaml", overrides=["train.lr=1e-5"])  # doctest: +SKIP
    >>> recipe.train.lr  # doctest: +SKIP
    1e-05

An invalid recipe raises `RecipeError` before any work starts; the message names the file, the
field, the bad value and what is allowed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from l2ray._schema import Section, format_validation_error
from l2ray.errors import L2rayError
from l2ray.languages import validate_codes
from l2ray.recipe.eval import EvalConfig
from l2ray.recipe.seeds import SeedsConfig
from l2ray.recipe.serve import ServeConfig
from l2ray.recipe.student import StudentConfig
from l2ray.recipe.synth import SynthConfig
from l2ray.recipe.teacher import Role, TeacherConfig, TeachersConfig, teacher_roles
from l2ray.recipe.train import TrainConfig

DEFAULT_LANGUAGES = ["zh", "ja", "fr", "de"]


class TrackingConfig(Section):
    """MLflow: the tracking URI (default ``sqlite:///<run dir>/mlflow.db``), experiment and model names."""

    tracking_uri: str | None = None
    experiment: str | None = Field(default=None, description="default: the recipe name")
    registered_model: str | None = Field(default=None, description="default: the recipe name")


class Recipe(Section):
    """Everything that decides a run. Each section is documented in its own module of `l2ray.recipe`."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    seed: int = 0
    output_dir: str = "runs"
    languages: list[str] = Field(default_factory=lambda: list(DEFAULT_LANGUAGES), min_length=1)
    seeds: SeedsConfig = Field(default_factory=SeedsConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    teachers: TeachersConfig | None = Field(default=None, description="per role; replaces teacher")
    synth: SynthConfig = Field(default_factory=SynthConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, codes: list[str]) -> list[str]:
        validate_codes(codes)
        if len(set(codes)) != len(codes):
            raise ValueError(f"languages repeat a code: {codes}")
        return codes

    @model_validator(mode="after")
    def _languages_used_elsewhere_are_known(self) -> Recipe:
        if self.synth.language_weights:
            validate_codes(list(self.synth.language_weights))
        if self.train.mix.languages:
            validate_codes(self.train.mix.languages)
        if self.teachers is not None and "teacher" in self.model_fields_set:
            raise ValueError("set teacher (one teacher for both roles) or teachers (per role), not both")
        return self

    @property
    def teacher_roles(self) -> dict[Role, TeacherConfig]:
        """Role → teacher section (the single ``teacher`` for both roles unless ``teachers`` is set)."""
        return teacher_roles(self.teacher, self.teachers)

    @property
    def run_dir(self) -> Path:
        """Absolute folder of this run: ``<output_dir>/<name>``."""
        return (Path(self.output_dir) / self.name).resolve()

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI; an absolute sqlite file under the run folder by default."""
        return self.tracking.tracking_uri or f"sqlite:///{self.run_dir / 'mlflow.db'}"

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def registered_model_name(self) -> str:
        return self.tracking.registered_model or self.name


class RecipeError(L2rayError, ValueError):
    """A recipe that cannot run: unreadable YAML, a bad override, or a field that fails validation."""


def load_recipe(path: str | os.PathLike[str], overrides: list[str] | None = None) -> Recipe:
    """Load a YAML recipe, apply ``key.sub=value`` overrides (values parsed as YAML) and validate.

    A recipe may start from another with ``extends: base.yaml`` (relative to its own folder); its
    own keys are merged over the base's, section by section.
    """
    path = Path(path)
    return recipe_from_dict(_read_with_bases(path, []), overrides, origin=str(path))


def recipe_from_dict(
    raw: dict[str, Any], overrides: list[str] | None = None, origin: str = "<dict>"
) -> Recipe:
    """Validate a recipe given as a dict (plus overrides); see `load_recipe`."""
    data = _deep_copy(raw)
    for item in overrides or []:
        apply_override(data, item, origin)
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, f"recipe {origin}", Recipe)) from None


def apply_override(data: dict[str, Any], item: str, origin: str = "<dict>") -> None:
    """Set ``data[a][b] = value`` for ``item == "a.b=value"`` (value parsed as YAML, in place)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"recipe {origin}: override {item!r} is not of the form key.sub=value")
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(f"recipe {origin}: override {item!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(value) if value.strip() else None


def _read_with_bases(path: Path, chain: list[Path]) -> dict[str, Any]:
    if path.resolve() in chain:
        cycle = " -> ".join(str(p) for p in [*chain, path.resolve()])
        raise RecipeError(f"recipe {path}: extends itself in a cycle ({cycle})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise RecipeError(f"recipe {path}: file not found") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path}: the top level must be a mapping, got {type(raw).__name__}")
    base = raw.pop("extends", None)
    if base is None:
        return raw
    return _merge(_read_with_bases(path.parent / str(base), [*chain, path.resolve()]), raw)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


__all__ = ["Recipe", "RecipeError", "TrackingConfig", "apply_override", "load_recipe", "recipe_from_dict"]
