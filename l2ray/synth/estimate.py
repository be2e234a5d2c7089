"""What a synthesis run would cost, before it sends anything (``l2ray synth --plan``; no Ray, no request).

For every task a run would still do (finished traces are skipped, as a run skips them) the plan lists
the requests of each role, once per distinct request: those the response cache or the recorded
content answers are free (``cache_hits``); the others are estimated
(`l2ray.synth.task_plan.PlannedRequest.estimated_tokens`, which batch mode's budget uses too). Prompt
tokens come from the text (`l2ray.teacher.base.estimate_tokens`); a translation's completion from its
source (`l2ray.synth.task_plan.TRANSLATION_GROWTH` × its tokens); a solve's completion from the seed's own
chain of thought (the nearest thing to the reasoning it will write), capped at the role's
``max_tokens``. Dollars use the role's price (`l2ray.teacher.prices.price_of`; a batch role at the
batch price), with ``usd_at_most`` where every completion runs to ``max_tokens``. A solve whose
question translation is not cached yet is estimated from the English question.

Example:
    >>> from l2ray.recipe import recipe_from_dict
    >>> plan = plan_cost(recipe_from_dict({"name": "demo"}))  # doctest: +SKIP
    >>> plan["roles"]["reasoner"]["requests"]  # doctest: +SKIP
    0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.table import Table

from l2ray.data.seeds import load_seeds
from l2ray.recipe import Recipe, Role
from l2ray.synth.api import plan_tasks
from l2ray.synth.output import SynthOutput
from l2ray.synth.roles import recorded_content, role_setups
from l2ray.synth.task_plan import PlannedRequest, task_requests
from l2ray.synth.translate import translation_of
from l2ray.teacher.client import RoleClients, TeacherClient
from l2ray.teacher.prices import price_of


@dataclass
class _RoleTally:
    requests: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    completion_at_most: int = 0
    seen: set[str] = field(default_factory=set)


def plan_cost(recipe: Recipe) -> dict[str, Any]:
    """Per role: requests to send, cache hits (free), estimated tokens and dollars (see the module).

    Seeds load as the run would load them: a bad row stops the plan as it would stop the run (``on_error:
    raise``, naming the row and field), or is counted and named in the plan (``skip``)."""
    loaded = load_seeds(recipe.seeds)
    seeds = loaded.rows
    tasks = plan_tasks(recipe, seeds)
    done = SynthOutput(recipe.run_dir).finished_ids() if (recipe.run_dir / "synth").exists() else set()
    todo = [task for task in tasks if task.id not in done]
    recorded = recorded_content(recipe, seeds)
    clients = RoleClients(
        role_setups(recipe), recipe.synth.prompt_version, recorded=recorded.entries, build=False
    )
    tallies: dict[Role, _RoleTally] = {role: _RoleTally() for role in recipe.teacher_roles}
    for task in todo:
        for request in task_requests(task, translation_of(clients.translator)):
            _count(tallies[request.role], clients.by_role[request.role], request)
    return {
        "tasks": {"planned": len(tasks), "to_run": len(todo), "finished": len(tasks) - len(todo)},
        "roles": {role: _role_line(recipe, role, tally) for role, tally in tallies.items()},
        "seeds": {"rows": len(seeds), "failed": [f.describe() for f in loaded.failures]},
    }


def plan_table(recipe: Recipe) -> Table:
    """`plan_cost` as a table for the terminal (``l2ray synth --plan``)."""
    plan = plan_cost(recipe)
    tasks = plan["tasks"]
    table = Table(
        title=f"synthesis plan: {tasks['to_run']} of {tasks['planned']} tasks to run "
        f"({tasks['finished']} finished); nothing was sent",
        box=box.SIMPLE_HEAD,
    )
    # Short headers and unwrapped names, so the table fits 100 columns; prices go below it.
    for header in ("role", "model", "requests", "cached", "prompt tok", "compl. tok", "USD", "USD max"):
        table.add_column(header, no_wrap=True)
    notes, prices = [], []
    for role, line in plan["roles"].items():
        price = line["price_per_mtok"]
        known = f"{price['input']}/{price['output']} ({price['as_of']})" if price["known"] else "unknown: 0"
        prices.append(f"{line['model']} {known}")
        values = [line[k] for k in ("requests", "cache_hits", "prompt_tokens", "completion_tokens", "usd")]
        table.add_row(role, line["model"], *map(str, values), str(line["usd_at_most"]))
        if not price["known"] and line["requests"]:
            notes.append(f"{role}: no price for {line['model']}; set price_per_mtok_input/_output")
        if line["max_cost_usd"] is not None and line["usd"] > line["max_cost_usd"]:
            notes.append(
                f"{role}: the estimate is over max_cost_usd={line['max_cost_usd']}; the run will stop there"
            )
    failed = plan["seeds"]["failed"]
    if failed:
        notes.append(f"{len(failed)} seed row(s) skipped (seeds.on_error: skip), first: {failed[0]}")
    notes.append("USD per Mtok in/out: " + "; ".join(dict.fromkeys(prices)))
    table.caption = "\n".join([*notes, "tokens and dollars are estimates (see l2ray.synth.estimate)"])
    return table


def _count(tally: _RoleTally, client: TeacherClient, request: PlannedRequest) -> None:
    fingerprint = client.fingerprint(request.messages)
    if fingerprint in tally.seen:  # the run sends a request once however many tasks need it
        return
    tally.seen.add(fingerprint)
    if client.cached(request.messages) is not None:
        tally.cache_hits += 1
        return
    limit = client.config.max_tokens
    prompt, completion = request.estimated_tokens(limit)
    tally.requests += 1
    tally.prompt_tokens += prompt
    tally.completion_tokens += completion
    tally.completion_at_most += limit


def _role_line(recipe: Recipe, role: Role, tally: _RoleTally) -> dict[str, Any]:
    config = recipe.teacher_roles[role]
    price = price_of(config)
    return {
        "model": config.model,
        "requests": tally.requests,
        "cache_hits": tally.cache_hits,
        "prompt_tokens": tally.prompt_tokens,
        "completion_tokens": tally.completion_tokens,
        "usd": round(price.cost(tally.prompt_tokens, tally.completion_tokens, config.batch), 4),
        "usd_at_most": round(price.cost(tally.prompt_tokens, tally.completion_at_most, config.batch), 4),
        "price_per_mtok": price.per_mtok(),
        "max_cost_usd": config.max_cost_usd,
    }
