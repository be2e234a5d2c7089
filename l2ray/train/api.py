"""Fine-tune the student on the recipe's data mix with Ray Train; track and register it in MLflow.

Example:
    >>> result = train(load_recipe("configs/demo.yaml"))  # doctest: +SKIP
    >>> result.model_uri  # doctest: +SKIP
    'models:/demo/1'

The driver does everything that can fail fast (reading and checking the traces, selecting the mix,
resolving the student, opening the MLflow run) before a single worker starts; then ``fit()``; then
it logs the final model, registers a version with the data fingerprint and code version as tags,
points the ``candidate`` alias at it and writes ``<run_dir>/train/result.json``.
"""

from __future__ import annotations

import functools
import json
import logging
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from l2ray.clock import utc_stamp
from l2ray.cluster import ensure_ray
from l2ray.console import polled_progress
from l2ray.mlflow_store import logged_steps
from l2ray.recipe import Recipe, TrainConfig
from l2ray.student.resolve import resolve_student
from l2ray.train.loop import LoopSettings, train_loop_per_worker
from l2ray.train.memory_plan import MemoryPlan, memory_plan, refuse_unless_fits, shape_of
from l2ray.train.mix import Mix, TrainDataError, read_traces, select_mix
from l2ray.train.mlflow_run import CANDIDATE_ALIAS, REGISTERED_FOR_TAG, Tracker, code_version
from l2ray.train.model import training_tokenizer
from l2ray.train.result import TrainResult
from l2ray.train.schedule import StepPlan, run_steps

if TYPE_CHECKING:
    from ray.train import Result

log = logging.getLogger(__name__)

RUN_STATE = "run.json"
RESULT = "result.json"


def train(recipe: Recipe, traces_dir: Path | None = None, resume: bool = False) -> TrainResult:
    """Train as ``recipe.train`` says on the traces in ``traces_dir`` (default ``<run_dir>/synth/traces``).

    ``resume`` continues the last run of this recipe (same Ray Train storage, same MLflow run) from
    its latest checkpoint. Raises `TrainDataError` before any worker starts when the data is unusable.
    """
    started = time.perf_counter()
    tracker = Tracker(recipe.tracking_uri)  # an unreachable store or refused credentials fail here
    config = recipe.train
    train_dir = recipe.run_dir / "train"
    mix = select_mix(
        read_traces(traces_dir or recipe.run_dir / "synth" / "traces"),
        config.mix,
        recipe.languages,
        recipe.seed,
    )
    if len(mix.rows) < config.num_workers:
        log.warning(
            "the mix has %d row(s) for train.num_workers=%d: %d worker(s) compute on a stand-in row "
            "without targets each step (docs/training.md)",
            len(mix.rows),
            config.num_workers,
            config.num_workers - len(mix.rows),
        )
    train_dir.mkdir(parents=True, exist_ok=True)
    (train_dir / "data.json").write_text(json.dumps(mix.summary(), indent=2, ensure_ascii=False))
    base_path = resolve_student(
        recipe.student.model, recipe.tracking_uri, cache_dir=recipe.run_dir / "cache", config=recipe.student
    )
    if config.use_gpu:  # on CPU the workers share the host: there is no per-GPU limit to hold
        refuse_unless_fits(shape_of(base_path), config)
    ray_run_name, run_id = _open_run(recipe, tracker, mix, train_dir, resume)
    settings = LoopSettings(
        train=config,
        steps=training_steps(mix, base_path, config, recipe.seed),
        base_path=base_path,
        seed=recipe.seed,
        tracking_uri=recipe.tracking_uri,
        run_id=run_id,
        fault_marker=str(train_dir / "ray" / ray_run_name / "fault_injected"),
    )
    try:
        steps = functools.partial(logged_steps, tracker.client, run_id)  # rank 0 logs them as it goes
        with polled_progress(settings.steps.total_steps, "training", steps):
            result = _fit(mix, config, settings, train_dir / "ray", ray_run_name)
        return _publish(recipe, tracker, mix, result, run_id, ray_run_name, train_dir, started)
    except BaseException:
        try:
            tracker.finish(run_id, "FAILED")
        except Exception as exc:  # the server that failed the stage may be the one gone: keep its error
            log.warning("could not mark MLflow run %s FAILED: %s", run_id, str(exc).splitlines()[0][:200])
        raise


def recipe_plan(recipe: Recipe) -> MemoryPlan:
    """The memory plan of ``recipe.train`` for its student, without loading any weights.

    An HF id is planned from its ``config.json`` (or offline, for Qwen2.5, from the bundled
    shapes); ``builtin:`` and ``models:/`` students are resolved to a folder first.
    """
    model = recipe.student.model
    if model.startswith(("builtin:", "models:/")):
        model = resolve_student(
            model, recipe.tracking_uri, cache_dir=recipe.run_dir / "cache", config=recipe.student
        )
    return memory_plan(shape_of(model), recipe.train)


def training_steps(mix: Mix, base_path: str, config: TrainConfig, seed: int) -> StepPlan:
    """The steps every worker will take (`l2ray.train.schedule.run_steps`); packed, the mix is
    tokenized here with the workers' tokenizer, since only the packs say how many steps there are."""
    tokenizer = training_tokenizer(base_path) if config.packing else None
    return run_steps(mix.training_records(), tokenizer, config, seed)


def _open_run(recipe: Recipe, tracker: Tracker, mix: Mix, train_dir: Path, resume: bool) -> tuple[str, str]:
    """The Ray run name and MLflow run id: new ones, or the recorded ones with ``resume``."""
    state_path = train_dir / RUN_STATE
    if resume:
        if not state_path.exists():
            raise TrainDataError(f"nothing to resume: {state_path} does not exist; start without --resume")
        state = json.loads(state_path.read_text())
        trained_on = tracker.client.get_run(state["run_id"]).data.tags.get("l2ray.data_fingerprint")
        if trained_on != mix.fingerprint:
            raise TrainDataError(
                f"cannot resume run {state['run_id']}: it trained on data {trained_on} but the recipe "
                f"now selects {mix.fingerprint}; restore the traces and train.mix it used, or start "
                "without --resume"
            )
        tracker.reopen(state["run_id"])
        return state["ray_run_name"], state["run_id"]
    ray_run_name = f"{recipe.name}-{utc_stamp()}"
    run_id = tracker.start_run(
        recipe.experiment_name,
        recipe.model_dump(mode="json"),
        artifact_root=recipe.run_dir / "mlartifacts",
        run_name=ray_run_name,
        artifacts={
            "recipe.yaml": yaml.safe_dump(
                recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True
            ),
            "data_summary.json": mix.summary(),
        },
    )
    tracker.client.set_tag(run_id, "l2ray.data_fingerprint", mix.fingerprint)
    state_path.write_text(json.dumps({"ray_run_name": ray_run_name, "run_id": run_id}, indent=2))
    return ray_run_name, run_id


def _fit(mix: Mix, config: TrainConfig, settings: LoopSettings, storage: Path, name: str) -> Result:
    """Run the TorchTrainer on the current Ray cluster (a local one is started if there is none)."""
    import ray
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ensure_ray()
    # Materialised up front: a lazy transform competing with the workers for CPUs can hang small clusters.
    dataset = ray.data.from_items(mix.training_records()).materialize()
    resources = {"CPU": config.cpus_per_worker} | ({"GPU": config.gpus_per_worker} if config.use_gpu else {})
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=settings.model_dump(),
        scaling_config=ScalingConfig(
            num_workers=config.num_workers, use_gpu=config.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=name,
            storage_path=config.storage_path or str(storage),
            checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints),
            failure_config=FailureConfig(max_failures=config.max_failures),
        ),
        datasets={"train": dataset},
        # Every worker reads the whole (small) mix and keeps its fixed share (`rank_share`).
        dataset_config=DataConfig(datasets_to_split=[]),
    )
    return trainer.fit()


def _publish(
    recipe: Recipe,
    tracker: Tracker,
    mix: Mix,
    result: Result,
    run_id: str,
    ray_run_name: str,
    train_dir: Path,
    started: float,
) -> TrainResult:
    """Log the final model, register it, alias it ``candidate``, close the run, write result.json."""
    checkpoint_path = _checkpoint_uri(result.checkpoint)
    state = _checkpoint_state(result.checkpoint)
    version, model_uri = _register(recipe, tracker, mix, checkpoint_path, state, run_id)
    metrics = {k: float(v) for k, v in result.metrics.items() if isinstance(v, int | float)}
    throughput = [m.value for m in tracker.client.get_metric_history(run_id, "tokens_per_s")]
    tracker.client.set_tag(run_id, "l2ray.checkpoint", checkpoint_path)
    tracker.finish(run_id)
    _warn_truncation(metrics, recipe.train.max_seq_len)
    outcome = TrainResult(
        model_uri=model_uri,
        version=version,
        registered_model=recipe.registered_model_name,
        alias=CANDIDATE_ALIAS,
        run_id=run_id,
        experiment_id=tracker.client.get_run(run_id).info.experiment_id,
        tracking_uri=recipe.tracking_uri,
        checkpoint_path=checkpoint_path,
        ray_run_name=ray_run_name,
        steps=state["step"],
        final_loss=state["loss"],
        rows=len(mix.rows),
        data_fingerprint=mix.fingerprint,
        truncated_examples=int(metrics.get("truncated_examples", 0)),
        truncated_tokens=int(metrics.get("truncated_tokens", 0)),
        tokens_per_s=statistics.median(throughput) if throughput else 0.0,
        wall_s=time.perf_counter() - started,
        metrics=metrics,
    )
    (train_dir / RESULT).write_text(outcome.model_dump_json(indent=2))
    return outcome


def _register(
    recipe: Recipe, tracker: Tracker, mix: Mix, checkpoint_path: str, state: dict[str, Any], run_id: str
) -> tuple[str, str]:
    """Register a tagged version of the final model: by reference to the bf16 safetensors the
    shards exported (FSDP2), or logged into the run after merging (DDP; LoRA adapters merged)."""
    from l2ray.train.checkpoint import EXPORT_DIR, is_sharded
    from l2ray.train.model import export_model

    tags = {
        "data_fingerprint": mix.fingerprint,
        "code_version": code_version(),
        "recipe": recipe.name,
        "mode": recipe.train.mode,
        "run_id": run_id,
        REGISTERED_FOR_TAG: checkpoint_path,
    }
    if is_sharded(state):
        source = f"{checkpoint_path.rstrip('/')}/{EXPORT_DIR}"
        return tracker.register_reference(run_id, source, recipe.registered_model_name, tags)
    model, tokenizer = export_model(checkpoint_path)
    return tracker.log_and_register(run_id, model, tokenizer, recipe.registered_model_name, tags)


def _checkpoint_uri(checkpoint: Any) -> str:
    """The checkpoint as a path (local storage) or a ``scheme://`` URI (``train.storage_path``)."""
    scheme = checkpoint.filesystem.type_name
    return checkpoint.path if scheme == "local" else f"{scheme}://{checkpoint.path}"


def _checkpoint_state(checkpoint: Any) -> dict[str, Any]:
    """``l2ray_state.json`` read where the checkpoint is, without downloading the shards."""
    from l2ray.train.model import STATE_FILE

    with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{STATE_FILE}") as stream:
        return json.loads(stream.read())


def _warn_truncation(metrics: dict[str, float], max_seq_len: int) -> None:
    if metrics.get("truncated_examples"):
        log.warning(
            "%d trace(s) were longer than train.max_seq_len=%d and were cut (%d tokens dropped)",
            metrics["truncated_examples"],
            max_seq_len,
            metrics["truncated_tokens"],
        )
