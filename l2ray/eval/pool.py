"""The Ray Data actor pool that generates and scores an evaluation's task rows: the engine each actor
builds (the in-process model, transformers or vLLM, or an OpenAI-compatible endpoint), what the pool
reserves, the driver's context check before it starts, and the tokenizer that counts tokens. The
entry points that use it are in `l2ray.eval.api`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from l2ray.cluster import ensure_ray, iter_rows
from l2ray.console import progress
from l2ray.eval.engines import EndpointError, SampleRequest, check_endpoint, served_model_id
from l2ray.eval.metrics import score_sample
from l2ray.eval.tasks import build_messages
from l2ray.recipe import EvalConfig, InterventionConfig, Recipe
from l2ray.student.model_ref import ModelRef


def served_model_for(recipe: Recipe, ref: ModelRef, endpoint: str | None) -> str | None:
    """The ``model`` field sent to ``endpoint`` (``None`` in-process).

    ``eval.served_model`` when set; else what the endpoint's ``/models`` lists — the model's URI when it
    is listed, else its one id. Not the URI alone: a server names its model itself (l2ray serve lists
    ``serve.served_model_name`` and refuses a pinned ``models:/NAME/V``).

    Raises:
        EndpointError: unreachable, or the model to ask for cannot be told (see `served_model_id`).
    """
    if not endpoint:
        return None
    api_key = _api_key(recipe)
    if recipe.eval.served_model:
        check_endpoint(endpoint, api_key)
        return recipe.eval.served_model
    return served_model_id(endpoint, api_key, prefer=ref.uri)


def generate_and_score(
    recipe: Recipe,
    rows: list[dict[str, Any]],
    interventions: dict[str, InterventionConfig],
    ref: ModelRef,
    endpoint: str | None,
    served: str | None = None,
) -> list[dict[str, Any]]:
    """Generate and score ``rows`` on a Ray Data actor pool; records come back in ``rows`` order.

    ``served`` is the ``model`` sent to ``endpoint`` (default: `served_model_for`).

    Raises:
        EndpointError: see `served_model_for`; or the endpoint refused every request with an HTTP 4xx (a
            wrong model name or key, not the model's accuracy).
        EngineFailedError: the in-process vLLM engine died or ran out of memory (no report is written).
        ContextError: a sample's prompt + ``eval.max_tokens`` exceeds the model's context (either
            in-process engine: transformers would decode past its positions, vLLM refuses the row).
    """
    engine, local_path = _engine_spec(recipe, ref, endpoint, served)
    if local_path:
        check_contexts(local_path, rows, recipe.eval)
    tokenizer = recipe.eval.tokenizer or local_path or counting_tokenizer(recipe, ref.uri)
    records = _run_actor_pool(recipe, rows, engine, interventions, tokenizer)
    refusal = refused_by_endpoint(records)
    if refusal is not None:
        raise EndpointError(
            f"endpoint {endpoint} refused all {len(records)} requests (first: {refusal}); nothing was "
            "evaluated, so no report is written and no model version tagged. Check the model name sent "
            f"({engine['served_model']!r}; set eval.served_model) and the key (eval.api_key_env)"
        )
    return records


@dataclass(frozen=True)
class PoolShape:
    """The evaluation actor pool: how many actors, and what each reserves."""

    size: int
    num_cpus: float
    num_gpus: float


def pool_shape(cfg: EvalConfig, http: bool) -> PoolShape:
    """``eval.replicas`` in-process engines (each with ``eval.num_gpus`` GPUs: a vLLM replica's
    tensor-parallel shards), among which Ray Data splits the rows; one HTTP client actor, no GPU.

    Example:
        >>> tp2 = EvalConfig(engine="vllm", replicas=4, num_gpus=2, vllm={"tensor_parallel_size": 2})
        >>> pool_shape(tp2, False)
        PoolShape(size=4, num_cpus=0.5, num_gpus=2.0)
        >>> pool_shape(EvalConfig(replicas=4), True)
        PoolShape(size=1, num_cpus=0.5, num_gpus=0.0)
    """
    if http:
        return PoolShape(1, 0.5, 0.0)
    return PoolShape(cfg.replicas, 0.5, cfg.num_gpus)


def check_contexts(model_path: str, rows: list[dict[str, Any]], cfg: EvalConfig) -> None:
    """Every row's prompt + ``eval.max_tokens`` against the in-process model's context, on the driver
    before the pool starts: one `ContextError` naming the first sample that cannot fit, before any
    generation (the engines check their own batches too)."""
    from l2ray.decode.codec import Codec
    from l2ray.eval.engines import check_context

    codec = Codec.from_pretrained(model_path)
    checked: set[tuple[str, str]] = set()  # a question asked in several configurations or samples
    for row in rows:
        if (row["question"], row["prompt_lang"]) in checked:
            continue
        checked.add((row["question"], row["prompt_lang"]))
        prompt = codec.chat_prompt(build_messages(row["question"], row["prompt_lang"], cfg.instruction))
        key = f"{row['benchmark']}/{row['problem_id']} ({row['configuration']})"
        check_context(key, len(prompt), cfg.max_tokens, codec.context_length)


def refused_by_endpoint(records: list[dict[str, Any]]) -> str | None:
    """The first error when every record failed with an HTTP 4xx, else ``None``.

    A 4xx on every request means the requests were wrong (model name, key, body), so an accuracy of 0
    would be a measurement of our configuration; 5xx and timeouts stay counted failures of the server.
    """
    if not records or not all(r["failed"] and (r["error"] or "").startswith("HTTP 4") for r in records):
        return None
    return records[0]["error"]


def counting_tokenizer(recipe: Recipe, uri: str) -> str:
    """The served model's tokenizer when it is ours to load, else the student's."""
    from l2ray.student.resolve import StudentNotFoundError

    try:
        return _local_path(recipe, uri)
    except StudentNotFoundError:
        return _local_path(recipe, recipe.student.model)


def load_encoder(tokenizer: str) -> Any:
    """``text -> token ids`` without special tokens, with the model's own `AutoTokenizer`.

    Not `tokenizers` alone: transformers 5 reloads a tokenizer as its model family's class, whose
    pre-tokenizer can differ from the raw ``tokenizer.json`` (e.g. how newlines split).
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer)
    return lambda text: tok.encode(text, add_special_tokens=False)


# --- helpers ---------------------------------------------------------------------------------------


def _engine_spec(
    recipe: Recipe, ref: ModelRef, endpoint: str | None, served: str | None
) -> tuple[dict[str, Any], str | None]:
    """What each actor builds its engine from (plain data: it travels to the actors), and the local
    model folder when the model runs in-process."""
    cfg = recipe.eval
    if not endpoint:
        local_path = _local_path(recipe, ref.uri)
        if cfg.engine == "vllm":
            return {"kind": "vllm", "model_path": local_path, "engine": cfg.vllm.model_dump()}, local_path
        return {"kind": "local", "model_path": local_path, "device": cfg.device}, local_path
    engine = {
        "kind": "http",
        "base_url": endpoint,
        "served_model": served or served_model_for(recipe, ref, endpoint),
        "api_key": _api_key(recipe),
        "concurrency": cfg.concurrency,
        "settings": cfg.http_settings().model_dump(),
        "l2ray_body": cfg.l2ray_body,
    }
    return engine, None


def _run_actor_pool(
    recipe: Recipe,
    rows: list[dict[str, Any]],
    engine: dict[str, Any],
    interventions: dict[str, InterventionConfig],
    tokenizer: str,
) -> list[dict[str, Any]]:
    """The scored records of ``rows``, in order, from one `_EvalActor` pool."""
    import ray

    cfg = recipe.eval
    ensure_ray()
    for index, row in enumerate(rows):
        row["order"] = index
    http = engine["kind"] == "http"
    shape = pool_shape(cfg, http)
    ds = ray.data.from_items(rows).map_batches(
        _EvalActor,
        fn_constructor_kwargs={
            "engine": engine,
            "interventions": {k: v.model_dump() for k, v in interventions.items()},
            "max_tokens": cfg.max_tokens,
            "temperature": cfg.temperature,
            "instruction": cfg.instruction,
            "tokenizer": tokenizer,
        },
        compute=ray.data.ActorPoolStrategy(size=shape.size),
        batch_size=max(cfg.concurrency * 4, 16) if http else cfg.concurrency,
        batch_format="pandas",
        num_cpus=shape.num_cpus,
        num_gpus=shape.num_gpus,
    )
    records, correct = [], 0
    # Rows stream back as the pool scores them: the bar counts samples (the run's, inside `l2ray run`).
    # An actor's own error (a dead engine: EngineFailedError) ends the run as itself.
    with progress(len(rows), "evaluating") as bar:
        for row in iter_rows(ds):
            records.append(json.loads(row["record"]))
            correct += bool(records[-1].get("correct"))
            bar.advance(1, f"{correct} correct")
    return sorted(records, key=lambda r: r.pop("order"))


class _EvalActor:
    """One engine and one tokenizer per actor: generate a batch, then score it.

    ``__call__`` is async so an HTTP engine keeps ``concurrency`` requests in flight; the in-process
    engine runs its batch synchronously. Scoring (grading, token counts with the student's tokenizer,
    language mix) happens in the same actor, so a run starts one pool of workers, not two.
    """

    def __init__(
        self,
        engine: dict[str, Any],
        interventions: dict[str, dict],
        max_tokens: int,
        temperature: float,
        tokenizer: str,
        instruction: bool = True,
    ) -> None:
        from l2ray.eval.engines import HttpEngine, LocalEngine, VllmLocalEngine

        spec = dict(engine)
        kind = spec.pop("kind")
        engines = {"http": HttpEngine, "local": LocalEngine, "vllm": VllmLocalEngine}
        self.engine = engines[kind](**spec)
        self.interventions = {k: InterventionConfig.model_validate(v) for k, v in interventions.items()}
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.instruction = instruction
        self.encode = load_encoder(tokenizer)

    async def __call__(self, batch: Any) -> dict[str, list[str]]:
        rows = [_plain(row) for row in batch.to_dict("records")]
        requests = [
            SampleRequest(
                key=str(row["order"]),
                messages=build_messages(row["question"], row["prompt_lang"], self.instruction),
                intervention=self.interventions[row["configuration"]],
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                seed=int(row["seed"]),
            )
            for row in rows
        ]
        if hasattr(self.engine, "agenerate"):
            generations = await self.engine.agenerate(requests)
        else:
            generations = self.engine.generate(requests)
        records = []
        for row, generation in zip(rows, generations, strict=True):
            record = score_sample(row, generation, self.encode)
            record["order"] = row["order"]
            records.append(json.dumps(record, ensure_ascii=False))
        return {"record": records}


def _api_key(recipe: Recipe) -> str | None:
    env = recipe.eval.api_key_env
    return os.environ.get(env) if env else None


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """pandas hands back numpy scalars; JSON wants Python ones."""
    return {k: v.item() if hasattr(v, "item") else v for k, v in row.items()}


def _local_path(recipe: Recipe, uri: str) -> str:
    from l2ray.student.resolve import resolve_student

    return resolve_student(uri, tracking_uri=recipe.tracking_uri, config=recipe.student)


__all__ = [
    "PoolShape",
    "check_contexts",
    "counting_tokenizer",
    "generate_and_score",
    "load_encoder",
    "pool_shape",
    "refused_by_endpoint",
    "served_model_for",
]
