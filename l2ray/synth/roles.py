"""Synthesis's teacher roles on the driver: what each role's clients are built from (its section, its
cache folder, the driver's key, the recorded content it may use), and the check, before Ray starts,
that a role without an endpoint has a cached or recorded reply for every request it will make.
"""

from __future__ import annotations

from pathlib import Path

from l2ray.data.seeds import SeedRow
from l2ray.errors import L2rayError
from l2ray.recipe import Recipe, Role, TeacherConfig
from l2ray.synth.prompts import parse_translation, solve_messages, translate_question_messages
from l2ray.synth.recorded import RecordedLoad, load_recorded
from l2ray.synth.task import SynthTask
from l2ray.synth.task_plan import fragment_requests
from l2ray.teacher.base import Secret
from l2ray.teacher.client import BudgetSoFar, RoleClients, RoleSetup

MAX_LISTED = 20


class MissingResponsesError(L2rayError, RuntimeError):
    """Requests that are neither cached nor recorded while their role has no teacher endpoint."""

    def __init__(self, missing: list[str], problems: list[str], section: str) -> None:
        listed = "\n".join(f"  - {m}" for m in missing[:MAX_LISTED])
        more = f"\n  … and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        notes = "".join(f"\n  note: {p}" for p in problems[:MAX_LISTED])
        super().__init__(
            f"{len(missing)} teacher request(s) are not in the cache or the recorded content, and "
            f"{section}.base_url is not set:\n{listed}{more}{notes}\nSet {section}.base_url (with its "
            f"api_key_env) or {section}.kind=transformers to generate them, or add recorded content."
        )
        self.missing = missing


def cache_dirs(recipe: Recipe) -> dict[Role, str]:
    """Role → response cache folder (``cache_dir`` of its section, default ``<run dir>/teacher_cache``)."""
    return {
        role: str(Path(config.cache_dir).resolve() if config.cache_dir else recipe.run_dir / "teacher_cache")
        for role, config in recipe.teacher_roles.items()
    }


def role_setups(
    recipe: Recipe,
    keys: dict[Role, Secret | None] | None = None,
    so_far: dict[Role, BudgetSoFar] | None = None,
) -> dict[Role, RoleSetup]:
    """Role → what its clients are built from: its section, its cache folder (`cache_dirs`), the
    driver's key and the batch stage's account of its budget (none given: cache lookups only)."""
    folders, keys, so_far = cache_dirs(recipe), keys or {}, so_far or {}
    return {
        role: RoleSetup(config, folders[role], keys.get(role), so_far.get(role, BudgetSoFar()))
        for role, config in recipe.teacher_roles.items()
    }


def recorded_content(
    recipe: Recipe, seeds: list[SeedRow], languages: list[str] | None = None
) -> RecordedLoad:
    """Cache entries made from the recorded teacher content each role may use."""
    return load_recorded(seeds, recipe.teacher_roles, prompt_version(recipe), languages or recipe.languages)


def check_offline_roles(recipe: Recipe, todo: list[SynthTask], recorded: RecordedLoad) -> None:
    """Fail before Ray starts when a role without an endpoint lacks cached or recorded replies."""
    offline = [role for role, config in recipe.teacher_roles.items() if not has_endpoint(config)]
    if not offline:
        return
    clients = RoleClients(role_setups(recipe), prompt_version(recipe), recorded=recorded.entries, build=False)
    missing = [m for role, m in missing_requests(todo, clients) if role in offline]
    if missing:
        raise MissingResponsesError(missing, recorded.problems, section_of(recipe, offline[0]))


def missing_requests(tasks: list[SynthTask], clients: RoleClients) -> list[tuple[Role, str]]:
    """``(role, description)`` of every request the tasks need that the cache cannot answer (a whole
    trace whose question translation is missing lists only that: its solve request depends on it)."""
    missing: list[tuple[Role, str]] = []
    for task in tasks:
        seed, langs = task.seed, task.languages
        if task.kind == "whole":
            question = clients.translator.cached(translate_question_messages(seed.question, langs[0]))
            if question is None:
                missing.append(("translator", f"seed {seed.id}: question translation into {langs[0]}"))
            elif clients.reasoner.cached(solve_messages(parse_translation(question.text), langs[0])) is None:
                missing.append(("reasoner", f"seed {seed.id}: whole reasoning in {langs[0]}"))
        elif task.kind == "mixed":
            for index, code, messages in fragment_requests(seed, langs):
                if clients.translator.cached(messages) is None:
                    what = f"seed {seed.id}: fragment {index} into {code} (mixed #{task.index})"
                    missing.append(("translator", what))
    return list(dict.fromkeys(missing))


def has_endpoint(config: TeacherConfig) -> bool:
    """Whether the role can generate a reply (a local model or a base URL), not only look one up."""
    return config.kind in ("transformers", "vllm", "python") or bool(config.base_url)


def section_of(recipe: Recipe, role: Role) -> str:
    """Where a role is configured in the recipe, for messages."""
    return f"teachers.{role}" if recipe.teachers is not None else "teacher"


def prompt_version(recipe: Recipe) -> str:
    """The prompt version every role's cache keys carry (``synth.prompt_version``)."""
    return recipe.synth.prompt_version
