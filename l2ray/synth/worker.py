"""The teacher stage: run the requests of trace tasks, concurrently, through the cached client.

`TeacherWorker` is the Ray Data callable class of the actor pool (per role one aiohttp session, one
cache writer, one concurrency bound and one budget per actor); its async ``__call__`` runs every
task of a batch at once and each role's client keeps at most its ``concurrency`` requests in flight.
`run_task` is the per-task logic.

A failed request does not fail the batch: the task's outcome carries the error and the task becomes
a rejected row with the cause. So does a reply cut off at ``max_tokens`` (``truncated``) and any
unforeseen error (``internal:<type>``): one task is lost to it, never the run.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from l2ray.recipe import Role
from l2ray.synth.prompts import (
    parse_translation,
    solve_messages,
    translate_question_messages,
)
from l2ray.synth.task import SynthTask, tasks_of
from l2ray.synth.task_plan import fragment_requests
from l2ray.teacher.base import TeacherError
from l2ray.teacher.cache import CacheEntry
from l2ray.teacher.client import Answer, CacheMissError, RoleClients, RoleSetup
from l2ray.teacher.prices import ignored_params


class TeacherWorker:
    """Ray Data UDF: a batch of task groups in (`l2ray.synth.task.group_row`), one ``{"id", "task",
    "outcome"}`` row per task out (the task as `SynthTask.to_row`, the outcome as JSON).

    Args:
        setups: role → its section, cache folder, the driver's API key (actors do not inherit the
            driver's environment) and the batch stage's account of its budget (what it spent counts
            here too; what it held back is rejected as ``teacher:budget``); equal sections share one
            client.
        prompt_version: ``synth.prompt_version``.
        recorded: recorded responses served from memory, never re-written.
        rate_share: how many actors share each role's RPM/TPM limits and budget.
    """

    def __init__(
        self,
        setups: dict[Role, RoleSetup],
        prompt_version: str,
        recorded: list[CacheEntry] | None = None,
        rate_share: int = 1,
    ) -> None:
        self.clients = RoleClients(setups, prompt_version, rate_share, recorded or [])

    async def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        tasks = [task for group in batch["tasks"] for task in tasks_of(group)]
        outcomes = await asyncio.gather(*(run_task(task, self.clients) for task in tasks))
        self.clients.sync()  # everything these rows used is durable before the rows move on
        return {
            "id": [task.id for task in tasks],
            "task": [task.to_row() for task in tasks],
            "outcome": [json.dumps(outcome, ensure_ascii=False) for outcome in outcomes],
        }


async def run_task(task: SynthTask, clients: RoleClients) -> dict[str, Any]:
    """Send (or look up) every request a task needs; errors are returned, not raised.

    Whole traces: the translator translates the question, the reasoner solves it in that language
    (not when the translation was cut off: the solve would build on half a question). Mixed traces:
    the translator translates the fragments."""
    log = _RequestLog(clients)
    responses: dict[str, Any] = {}
    seed, langs = task.seed, task.languages
    meta = {"seed_id": seed.id, "kind": task.kind}
    try:
        if task.kind == "whole":
            lang = langs[0]
            question = await log.ask("translator", translate_question_messages(seed.question, lang), meta)
            responses["question"] = question.text
            if question.finish_reason != "length":
                solve = solve_messages(parse_translation(question.text), lang)
                responses["solution"] = (await log.ask("reasoner", solve, meta)).text
        elif task.kind == "mixed":
            wanted = fragment_requests(seed, langs)
            # Every fragment request finishes (and is logged: it is paid for) before a failure counts.
            answers = await asyncio.gather(
                *(log.ask("translator", messages, meta) for _, _, messages in wanted),
                return_exceptions=True,
            )
            failed = next((a for a in answers if isinstance(a, BaseException)), None)
            if failed is not None:
                raise failed
            responses["fragments"] = {str(i): a.text for (i, _, _), a in zip(wanted, answers, strict=True)}
    except (TeacherError, CacheMissError) as exc:
        reason = f"teacher:{exc.reason}" if isinstance(exc, TeacherError) else "cache_miss"
        return log.outcome(responses, reason, str(exc))
    except Exception as exc:  # a bug or an unforeseen reply costs this task, not the batch or the run
        return log.outcome(responses, f"internal:{type(exc).__name__}", str(exc)[:500])
    cut = [r for r in log.requests if r["finish_reason"] == "length"]
    if cut:
        where = ", ".join(f"{r['fingerprint'][:16]} ({r['role']})" for r in cut)
        role = cut[0]["role"]
        detail = (
            f"reply {where} stopped at max_tokens; raise teacher.max_tokens (or teachers.{role}.max_tokens)"
            " to keep such traces"
        )
        return log.outcome(responses, "truncated", detail)
    return log.outcome(responses)


class _RequestLog:
    """Every request a task made, paid or cached (role, fingerprint, tokens, cost, the model that
    answered), and the task's provenance: per role the model asked for, the models that answered
    and the sampling parameters the model applies (`l2ray.teacher.prices.ignored_params` are left out)."""

    def __init__(self, clients: RoleClients) -> None:
        self.clients = clients
        self.requests: list[dict[str, Any]] = []

    async def ask(self, role: Role, messages: list[dict[str, str]], meta: dict[str, Any]) -> Answer:
        client = self.clients.by_role[role]
        answer = await client.ask(messages, meta)
        usage = answer.usage
        self.requests.append(
            {
                "role": role,
                "fingerprint": answer.fingerprint,
                "cached": answer.cached,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "cost_usd": client.price.cost(usage.prompt_tokens, usage.completion_tokens),
                "finish_reason": answer.finish_reason,
                "served_model": answer.served_model,
            }
        )
        return answer

    def outcome(
        self, responses: dict[str, Any], reason: str | None = None, detail: str = ""
    ) -> dict[str, Any]:
        return {**_outcome(responses, self.requests, reason, detail), "teacher": self.provenance()}

    def provenance(self) -> dict[str, Any]:
        roles: dict[str, Any] = {}
        for request in self.requests:
            role = request["role"]
            if role not in roles:
                config = self.clients.by_role[role].config
                params = {
                    "temperature": config.temperature,
                    "top_p": config.top_p,
                    "max_tokens": config.max_tokens,
                }
                ignored = ignored_params(config.model)
                applied = {k: v for k, v in params.items() if k not in ignored}
                roles[role] = {
                    "model": config.model,
                    "served": [],
                    "params": applied,
                    "ignored": list(ignored),
                }
            served = request["served_model"]
            if served and served not in roles[role]["served"]:
                roles[role]["served"].append(served)
        return {"roles": roles, "requests": [r["fingerprint"] for r in self.requests]}


def _outcome(
    responses: dict[str, Any], requests: list[dict[str, Any]], reason: str | None = None, detail: str = ""
) -> dict[str, Any]:
    error = {"reason": reason, "detail": detail} if reason else None
    return {"responses": responses, "requests": requests, "error": error}
