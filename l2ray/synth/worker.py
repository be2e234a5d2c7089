"""The teacher stage: run the requests of trace tasks, concurrently, through the cached client.

`TeacherWorker` is the Ray Data callable class of the actor pool (one aiohttp session, one cache
writer and one concurrency bound per actor); its async ``__call__`` runs every task of a batch at
once and the client keeps at most ``teacher.concurrency`` requests in flight. `run_task` is the
per-task logic, also used without Ray by `l2ray.synth.api.translate_questions`.

A failed request does not fail the batch: the task's outcome carries the error and the task becomes
a rejected row with the cause. So does a reply cut off at ``max_tokens`` (``truncated``) and any
unforeseen error (``internal:<type>``): one task is lost to it, never the run.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from l2ray.data.seeds import SeedRow
from l2ray.synth.plan import fragment_requests
from l2ray.synth.prompts import (
    parse_translation,
    solve_messages,
    translate_question_messages,
)
from l2ray.teacher.base import Secret, TeacherError
from l2ray.teacher.cache import CacheEntry, ResponseCache
from l2ray.teacher.client import Answer, CacheMissError, TeacherClient, build_teacher
from l2ray.teacher.config import TeacherConfig


class TeacherWorker:
    """Ray Data UDF: a batch of task groups in (``{"tasks"}``: a JSON list of tasks, see
    `l2ray.synth.plan.group_tasks`), one ``{"id", "task", "outcome"}`` row per task out (JSON strings).

    Args:
        teacher: the teacher section as a JSON string (pydantic-dumped).
        prompt_version: ``synth.prompt_version``.
        cache_dir: the response cache folder.
        recorded: recorded responses (`CacheEntry` dicts) served from memory, never re-written.
        rate_share: how many actors share the RPM/TPM limits.
        api_key: the driver's API key (actors do not inherit the driver's environment).
    """

    def __init__(
        self,
        teacher: str,
        prompt_version: str,
        cache_dir: str,
        recorded: list[dict[str, Any]] | None = None,
        rate_share: int = 1,
        api_key: Secret | None = None,
    ) -> None:
        config = TeacherConfig.model_validate_json(teacher)
        cache = ResponseCache(cache_dir, preload=[CacheEntry(**e) for e in recorded or []])
        self.client = TeacherClient(build_teacher(config, rate_share, api_key), cache, config, prompt_version)

    async def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        tasks = [task for group in _rows(batch) for task in json.loads(group["tasks"])]
        outcomes = await asyncio.gather(*(run_task(task, self.client) for task in tasks))
        self.client.sync()  # everything these rows used is durable before the rows move on
        return {
            "id": [task["id"] for task in tasks],
            "task": [json.dumps(task, ensure_ascii=False) for task in tasks],
            "outcome": [json.dumps(outcome, ensure_ascii=False) for outcome in outcomes],
        }


async def run_task(task: dict[str, Any], client: TeacherClient) -> dict[str, Any]:
    """Send (or look up) every request a task needs; errors are returned, not raised."""
    requests: list[dict[str, Any]] = []
    responses: dict[str, Any] = {}
    seed = SeedRow.model_validate_json(task["seed"])
    langs: list[str] = json.loads(task["languages"])
    meta = {"seed_id": seed.id, "kind": task["kind"]}
    try:
        if task["kind"] == "whole":
            lang = langs[0]
            question = await _ask(client, translate_question_messages(seed.question, lang), requests, meta)
            responses["question"] = question.text
            solve = solve_messages(parse_translation(question.text), lang)
            responses["solution"] = (await _ask(client, solve, requests, meta)).text
        elif task["kind"] == "mixed":
            wanted = fragment_requests(seed, langs)
            # Every fragment request finishes (and is logged: it is paid for) before a failure counts.
            answers = await asyncio.gather(
                *(_ask(client, messages, requests, meta) for _, _, messages in wanted),
                return_exceptions=True,
            )
            failed = next((a for a in answers if isinstance(a, BaseException)), None)
            if failed is not None:
                raise failed
            responses["fragments"] = {str(i): a.text for (i, _, _), a in zip(wanted, answers, strict=True)}
    except (TeacherError, CacheMissError) as exc:
        reason = f"teacher:{exc.reason}" if isinstance(exc, TeacherError) else "cache_miss"
        return _outcome(responses, requests, reason, str(exc))
    except Exception as exc:  # a bug or an unforeseen reply costs this task, not the batch or the run
        return _outcome(responses, requests, f"internal:{type(exc).__name__}", str(exc)[:500])
    cut = [r["fingerprint"][:16] for r in requests if r["finish_reason"] == "length"]
    if cut:
        detail = f"reply {', '.join(cut)} stopped at teacher.max_tokens; raise it to keep such traces"
        return _outcome(responses, requests, "truncated", detail)
    return _outcome(responses, requests)


def _outcome(
    responses: dict[str, Any], requests: list[dict[str, Any]], reason: str | None = None, detail: str = ""
) -> dict[str, Any]:
    error = {"reason": reason, "detail": detail} if reason else None
    return {"responses": responses, "requests": requests, "error": error}


async def _ask(
    client: TeacherClient, messages: list[dict[str, str]], log: list[dict[str, Any]], meta: dict[str, Any]
) -> Answer:
    answer = await client.ask(messages, meta)
    log.append(
        {
            "fingerprint": answer.fingerprint,
            "cached": answer.cached,
            "prompt_tokens": answer.usage.prompt_tokens,
            "completion_tokens": answer.usage.completion_tokens,
            "finish_reason": answer.finish_reason,
        }
    )
    return answer


def _rows(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """Column batch (numpy arrays) → plain Python rows."""
    columns = list(batch)
    count = len(batch[columns[0]]) if columns else 0
    return [{c: _plain(batch[c][i]) for c in columns} for i in range(count)]


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
