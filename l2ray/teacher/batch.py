"""The OpenAI-compatible batch API as a way to fill the response cache: upload, submit, poll, collect.

`run_batch` takes the requests a role still needs (fingerprint, messages, meta), skips those the
cache answers, and sends the rest as JSONL batches (``custom_id`` = the request fingerprint) through
the ``openai`` client's files and batches calls (``/v1/files`` + ``/v1/batches``). Each submitted
batch is remembered in a small state file under ``<cache dir>/batches/`` the moment it exists, so a
killed run resumes by polling and collecting the batches it already paid for instead of submitting
them again. A run killed between the provider creating a batch and that state file is covered too:
each submission is written down first (a ``.pending`` file with a token), the batch carries the
token in its ``metadata``, and the next run finds it among the provider's batches before it submits
anything. Collected replies are classified like live ones (`l2ray.teacher.openai_http.parse_reply`:
a cut-off reply is final) and written to the same cache, where the pipeline then finds them; failed
lines are reported and stay cache misses (a rerun submits them again, in a new batch, and nothing
else).

``max_cost_usd`` holds here too: what this run collected is counted at the batch price, and a batch
takes the requests, in order, while their estimated cost (`BatchRequest.estimated_usd`) still fits
under it. The first that does not fit and everything after it are held back unsent
(`BatchReport.held_back`), with no further, smaller batches; the pipeline rejects their traces as
``teacher:budget``, and the next run submits them. The estimate is not a bound: a batch is paid for
whole once submitted, so replies longer than estimated (a reasoning model that writes more than the
seed's chain of thought) pass the budget by more than live mode's requests in flight can.

Example:
    >>> config = TeacherConfig(base_url="http://127.0.0.1:9/v1", model="gpt-4o", batch=True)
    >>> str(BatchAPI(config, None).client.base_url)
    'http://127.0.0.1:9/v1/'
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import openai
from openai.types import Batch

from l2ray.recipe import TeacherConfig
from l2ray.teacher.base import Message, SamplingParams, Secret, TeacherError
from l2ray.teacher.cache import CacheEntry, ResponseCache
from l2ray.teacher.openai_http import parse_reply
from l2ray.teacher.prices import Price, price_of

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
SUBMISSION_KEY = "l2ray_submission"
"""The batch metadata key that carries a submission's token (found again after a kill)."""
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
RETRIED_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
"""Statuses the ``openai`` client retries (every 5xx; these are the ones an endpoint sends)."""
T = TypeVar("T")


@dataclass(frozen=True)
class BatchRequest:
    """One request a role still needs; ``estimated_usd``: its cost estimate at the batch price."""

    fingerprint: str
    messages: list[Message]
    meta: dict[str, Any] = field(default_factory=dict)
    estimated_usd: float = 0.0


@dataclass
class BatchReport:
    """What the batch stage did for a role this run: batches submitted and collected, lines answered
    (and their tokens), lines that failed (fingerprint → reason), requests held back unsent because
    they would pass ``max_cost_usd``. ``live``: the role answered live instead (a translator whose
    questions a batch reasoner solves), at the live price."""

    submitted: list[str] = field(default_factory=list)
    collected: list[str] = field(default_factory=list)
    answered: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    held_back: list[str] = field(default_factory=list)
    live: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "submitted": self.submitted,
            "collected": self.collected,
            "answered": self.answered,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "failed": len(self.failed),
            "failed_reasons": sorted(set(self.failed.values())),
            "held_back_by_budget": len(self.held_back),
            "live": self.live,
        }

    def cost(self, price: Price) -> float:
        """USD for what this report paid: at the batch price, or the live one for a live pass."""
        return price.cost(self.prompt_tokens, self.completion_tokens, batch=not self.live)


async def run_batch(
    config: TeacherConfig,
    cache: ResponseCache,
    requests: list[BatchRequest],
    params: SamplingParams,
    api_key: Secret | None,
    spent_usd: float = 0.0,
) -> BatchReport:
    """Resume the role's unfinished batches, then submit and collect batches for what is still missing
    and fits the budget (``spent_usd``: what this run already spent from it)."""
    report = BatchReport()
    api = BatchAPI(config, api_key)
    states = BatchStates(Path(cache.directory) / "batches", config.model, params)
    try:
        for pending in states.pending():
            await _adopt(api, states, pending)
        for state in states.unfinished():
            await _finish(api, states, state, cache, report)
        retried_here = set(report.failed)  # lines that just failed are not resubmitted in this run
        todo = [r for r in dict((r.fingerprint, r) for r in requests).values() if r.fingerprint not in cache]
        todo = [r for r in todo if r.fingerprint not in retried_here]
        price = price_of(config)
        while todo:
            spent = spent_usd + report.cost(price)
            head = todo[: config.batch_max_requests]
            chunk = _affordable(head, config.max_cost_usd, spent)
            todo = todo[len(chunk) :]
            if chunk:
                state = await _submit(api, states, config, chunk, params)
                report.submitted.append(state["batch_id"])
                await _finish(api, states, state, cache, report)
            if len(chunk) < len(head):  # the budget cut this batch: the rest waits for a rerun
                report.held_back = [r.fingerprint for r in todo]
                break
    finally:
        await api.aclose()
    return report


class BatchAPI:
    """The four calls of the batch API through the official ``openai`` client (its files and batches
    resources, which retry 408, 409, 429, 5xx and dropped connections ``max_retries`` times with their
    own backoff, honouring ``Retry-After``); a failure is a `TeacherError` naming the call and status,
    with the body scrubbed of the key.

    No total timeout: a connect timeout and a per-read one, as for live requests (a batch's output
    file may be large).
    """

    def __init__(self, config: TeacherConfig, api_key: Secret | None) -> None:
        if not config.base_url:
            raise ValueError("batch mode needs teacher.base_url")
        self.config = config
        self._key = api_key.value if api_key else None
        # An endpoint without a key gets no Authorization header at all (the client insists on a
        # key, so it holds a placeholder and every call omits the header).
        self._auth: dict[str, Any] = {} if self._key else {"Authorization": openai.Omit()}
        self.client = openai.AsyncOpenAI(
            base_url=config.base_url,
            api_key=self._key or "unused",
            max_retries=config.max_retries,
            timeout=openai.Timeout(None, connect=config.connect_timeout_s, read=config.read_timeout_s),
        )

    async def upload(self, jsonl: bytes) -> str:
        request = self.client.files.create(
            file=("requests.jsonl", jsonl, "application/jsonl"), purpose="batch", extra_headers=self._auth
        )
        return (await self._call("POST /files", request)).id

    async def create(self, file_id: str, submission: str) -> Batch:
        request = self.client.batches.create(
            input_file_id=file_id,
            endpoint=ENDPOINT,
            completion_window=COMPLETION_WINDOW,
            metadata={SUBMISSION_KEY: submission},
            extra_headers=self._auth,
        )
        return await self._call("POST /batches", request)

    async def find(self, submission: str, since: float) -> Batch | None:
        """The batch created with ``submission`` in its metadata, looking back (newest first) to batches
        created a minute before ``since``; ``None`` when the provider never created it."""
        page = await self._call("GET /batches", self.client.batches.list(limit=100, extra_headers=self._auth))
        while True:
            for batch in page.data:
                if (batch.metadata or {}).get(SUBMISSION_KEY) == submission:
                    return batch
                if batch.created_at and batch.created_at < since - 60:
                    return None
            if not page.has_next_page():
                return None
            page = await self._call("GET /batches", page.get_next_page())

    async def get(self, batch_id: str) -> Batch:
        request = self.client.batches.retrieve(batch_id, extra_headers=self._auth)
        return await self._call(f"GET /batches/{batch_id}", request)

    async def content(self, file_id: str) -> bytes:
        request = self.client.files.content(file_id, extra_headers=self._auth)
        return (await self._call(f"GET /files/{file_id}/content", request)).content

    async def aclose(self) -> None:
        await self.client.close()

    async def _call(self, what: str, request: Awaitable[T]) -> T:
        """``request``'s result, or the `TeacherError` its final failure means."""
        tries = self.config.max_retries + 1
        try:
            return await request
        except openai.APIStatusError as exc:
            detail = exc.response.text
            detail = detail.replace(self._key, "***")[:200] if self._key else detail[:200]
            attempts = tries if exc.status_code in RETRIED_STATUSES else 1
            raise TeacherError(f"http_{exc.status_code}", f"{what}: {detail}", attempts) from None
        except openai.APIConnectionError as exc:
            cause = type(exc.__cause__ or exc).__name__
            raise TeacherError("connection", f"{what}: {cause}", tries) from None


class BatchStates:
    """One JSON file per submitted batch (id, input file, the fingerprints and metas it carries, status)."""

    def __init__(self, folder: Path, model: str, params: SamplingParams) -> None:
        self.folder, self.model = folder, model
        # Two roles may ask one model with different sampling into one cache folder: a batch belongs
        # to the section whose requests it carries, and its cost to that section's budget.
        self.owner = f"{model} {params.temperature} {params.top_p} {params.max_tokens}"
        folder.mkdir(parents=True, exist_ok=True)

    def unfinished(self) -> list[dict[str, Any]]:
        """This section's batches not collected yet (a state written before owners: by its model)."""
        states = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(self.folder.glob("*.json"))]
        return [s for s in states if self._owns(s) and s["status"] != "collected"]

    def _owns(self, state: dict[str, Any]) -> bool:
        return state["owner"] == self.owner if "owner" in state else state["model"] == self.model

    def pending(self) -> list[dict[str, Any]]:
        """This section's submissions written down before their batch was known to exist."""
        states = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(self.folder.glob("*.pending"))]
        return [s for s in states if self._owns(s)]

    def save(self, state: dict[str, Any]) -> None:
        """A batch's state (``batch_id``), or a submission not yet created (``submission``, ``.pending``)."""
        name = f"{state['batch_id']}.json" if "batch_id" in state else f"{state['submission']}.pending"
        path = self.folder / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)
        if "batch_id" in state and "submission" in state:  # the batch is known now: its intent is done
            (self.folder / f"{state['submission']}.pending").unlink(missing_ok=True)

    def drop(self, pending: dict[str, Any]) -> None:
        """Forget a submission the provider never created (its requests are submitted again)."""
        (self.folder / f"{pending['submission']}.pending").unlink(missing_ok=True)


async def _submit(
    api: BatchAPI,
    states: BatchStates,
    config: TeacherConfig,
    chunk: list[BatchRequest],
    params: SamplingParams,
) -> dict[str, Any]:
    lines = []
    for request in chunk:
        body = {
            "model": config.model,
            "messages": request.messages,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
        }
        lines.append({"custom_id": request.fingerprint, "method": "POST", "url": ENDPOINT, "body": body})
    file_id = await api.upload("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines).encode())
    pending = {
        "submission": uuid.uuid4().hex,
        "submitted_at": time.time(),
        "model": config.model,
        "owner": states.owner,
        "input_file_id": file_id,
        "metas": {r.fingerprint: r.meta for r in chunk},
    }
    states.save(pending)  # before the batch exists: a run killed in between finds it by this token
    batch = await api.create(file_id, pending["submission"])
    state = _state_of(pending, batch)
    # Saved at once: from here on a killed run resumes this batch instead of paying for it again.
    states.save(state)
    return state


async def _adopt(api: BatchAPI, states: BatchStates, pending: dict[str, Any]) -> None:
    """A submission a killed run wrote down: its batch's state if the provider created it, else gone."""
    batch = await api.find(pending["submission"], pending["submitted_at"])
    if batch is None:
        states.drop(pending)
    else:
        states.save(_state_of(pending, batch))


def _state_of(pending: dict[str, Any], batch: Batch) -> dict[str, Any]:
    meta = {k: pending[k] for k in ("submission", "model", "owner", "input_file_id", "metas")}
    return {"batch_id": batch.id, **meta, "status": batch.status or "validating"}


async def _finish(
    api: BatchAPI, states: BatchStates, state: dict[str, Any], cache: ResponseCache, report: BatchReport
) -> None:
    """Poll until the batch ends, then write every answered line to the cache."""
    while True:
        batch = await api.get(state["batch_id"])
        if batch.status in TERMINAL:
            break
        await asyncio.sleep(api.config.batch_poll_s)
    answered: set[str] = set()
    for file_id in (batch.output_file_id, batch.error_file_id):
        if file_id:
            for raw in (await api.content(file_id)).decode("utf-8").splitlines():
                if raw.strip():
                    answered.add(_collect_line(json.loads(raw), state, api.config, cache, report))
    for fingerprint in state["metas"]:
        if fingerprint not in answered:
            report.failed[fingerprint] = f"batch_{batch.status}"
    cache.sync()
    states.save({**state, "status": "collected"})
    report.collected.append(state["batch_id"])


def _collect_line(
    line: dict[str, Any],
    state: dict[str, Any],
    config: TeacherConfig,
    cache: ResponseCache,
    report: BatchReport,
) -> str:
    fingerprint = line["custom_id"]
    response = line.get("response") or {}
    if line.get("error") or response.get("status_code") != 200:
        code = (line.get("error") or {}).get("code") or f"http_{response.get('status_code')}"
        report.failed[fingerprint] = str(code)
        return fingerprint
    try:
        reply = parse_reply(json.dumps(response["body"]).encode())
    except Exception as exc:  # an empty or malformed line: reported, never cached
        report.failed[fingerprint] = getattr(exc, "reason", type(exc).__name__)
        return fingerprint
    usage = reply.usage
    meta = {**state["metas"].get(fingerprint, {}), "batch": state["batch_id"]}
    entry = CacheEntry(
        fingerprint,
        config.model,
        reply.text,
        usage.prompt_tokens,
        usage.completion_tokens,
        meta,
        reply.finish_reason,
        reply.model,
    )
    cache.put(entry)
    report.answered += 1
    report.prompt_tokens += usage.prompt_tokens
    report.completion_tokens += usage.completion_tokens
    return fingerprint


def _affordable(requests: list[BatchRequest], budget: float | None, spent: float) -> list[BatchRequest]:
    """The longest head of ``requests`` whose estimated cost fits in what ``budget`` leaves."""
    if budget is None:
        return requests
    left = budget - spent
    for count, request in enumerate(requests):
        left -= request.estimated_usd
        if left < 0:
            return requests[:count]
    return requests
