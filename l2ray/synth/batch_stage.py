"""The batch pre-stage of a synthesis run: before the Ray Data pipeline, the roles with ``batch: true``
fill the response cache through the batch API (translations first, then the solves of the questions
now translated), and what each role spent there counts toward its budget and the run's cost.
"""

from __future__ import annotations

import asyncio

from l2ray.recipe import ROLES, Recipe, Role, TeacherConfig
from l2ray.synth.recorded import RecordedLoad
from l2ray.synth.roles import prompt_version, role_setups
from l2ray.synth.task import SynthTask
from l2ray.synth.task_plan import task_requests
from l2ray.synth.translate import translation_of
from l2ray.teacher.base import Secret
from l2ray.teacher.batch import BatchReport, BatchRequest, run_batch
from l2ray.teacher.client import RoleClients, TeacherClient, build_teacher
from l2ray.teacher.prices import price_of


async def run_batches(
    recipe: Recipe, todo: list[SynthTask], recorded: RecordedLoad, keys: dict[Role, Secret | None]
) -> dict[Role, BatchReport]:
    """Fill the cache through the batch API for the roles with ``batch: true``, before the pipeline:
    translations first, then the solves of the questions now translated. A reasoner in batch mode
    behind a live translator gets its questions translated live here, so one run does it all."""
    roles = recipe.teacher_roles
    if not any(config.batch for config in roles.values()):
        return {}
    clients = RoleClients(role_setups(recipe), prompt_version(recipe), recorded=recorded.entries, build=False)
    reports: dict[Role, BatchReport] = {}
    for role in ROLES:
        client, config = clients.by_role[role], roles[role]
        price = price_of(config)
        wanted = [
            BatchRequest(
                client.fingerprint(r.messages),
                r.messages,
                {"kind": task.kind, "seed_id": task.seed_id},
                price.cost(*r.estimated_tokens(config.max_tokens), batch=True),
            )
            for task in todo
            for r in task_requests(task, translation_of(clients.translator))
            if r.role == role and not r.pending
        ]
        if config.batch:
            # One section serving both roles has one budget: the translations' cost counts for the solves.
            spent = sum(batch_cost(config, reports[r]) for r in reports if clients.by_role[r] is client)
            reports[role] = await run_batch(config, client.cache, wanted, client.params, keys[role], spent)
        elif role == "translator" and roles["reasoner"].batch:
            reports[role] = await _ask_live(config, clients.translator, wanted, keys[role])
    await clients.aclose()
    return reports


def batch_cost(config: TeacherConfig, report: BatchReport) -> float:
    return report.cost(price_of(config))


async def _ask_live(
    config: TeacherConfig, cached: TeacherClient, wanted: list[BatchRequest], key: Secret | None
) -> BatchReport:
    """Translate live what batch solves need; what it paid counts in the run's cost and budget."""
    live = TeacherClient(build_teacher(config, api_key=key), cached.cache, config, cached.prompt_version)
    try:
        answers = await asyncio.gather(
            *(live.ask(r.messages, r.meta) for r in wanted), return_exceptions=True
        )
    finally:
        live.sync()
        if live.teacher is not None:
            await live.teacher.aclose()
    report = BatchReport(live=True)
    for request, answer in zip(wanted, answers, strict=True):
        if isinstance(answer, BaseException):
            report.failed[request.fingerprint] = getattr(answer, "reason", type(answer).__name__)
        elif not answer.cached:
            report.answered += 1
            report.prompt_tokens += answer.usage.prompt_tokens
            report.completion_tokens += answer.usage.completion_tokens
    return report
