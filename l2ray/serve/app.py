"""`build_app`: the one builder of every composition of the graph (what ``serve_config.yaml`` imports).

    Ingress → Generator        (default, graph: split; the replica runs the intervention)
    Ingress → VllmGenerator    (engine: vllm; the processor runs it)
    Ingress ⊃ Generator        (graph: direct; the generator lives in the Ingress replica)
    Ingress → generator_url    (an HTTP-only generator; segment loop)

The Ingress holds the `ReasoningController` in its own process (one hop to the model, not two; none
in the direct graph: `l2ray.serve.links`).

A registry model (``models:/NAME@champion``) is resolved to its version *here*, once per deploy, and
every Generator replica is bound to that version (``models:/NAME/N``): replicas started later (a
crash, autoscaling) serve the same weights as their siblings even when the alias has moved since.
The alias takes effect through a redeploy (the RayService's upgrade, docs/cluster.md); the Ingress
reports the version in ``GET /v1/models``.

Example:
    >>> app = build_app({"model": "builtin:tiny", "num_cpus": 0.25})  # doctest: +SKIP
    >>> serve.run(app, route_prefix="/")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from ray.serve import Application

from l2ray._schema import format_validation_error
from l2ray.errors import L2rayError
from l2ray.recipe import ServeConfig
from l2ray.serve.links import generator_parts
from l2ray.student.model_ref import ModelRef, resolve_model

logger = logging.getLogger("ray.serve")


class ServeArgsError(L2rayError, ValueError):
    """``args`` of `build_app` that do not validate against `ServeConfig`."""


def build_app(args: dict[str, Any]) -> Application:
    """Validate ``args`` (the `ServeConfig` fields) and bind the deployment graph."""
    from l2ray.serve.ingress import Ingress

    config = validate_args(args)
    served = pin_model(config)
    # The typed objects travel to the replicas as they are (pickled), not re-validated from dicts there.
    if config.graph == "direct":  # the Ingress replica is the model's (never with generator_url)
        return Ingress.options(**_replica_options(config)).bind(None, config, served)
    generator = None
    if config.generator_url is None:
        deployment, generator_args = generator_parts(config, served.uri)
        generator = deployment.options(**_replica_options(config)).bind(*generator_args)
    ingress = {"ray_actor_options": {"num_cpus": config.router_num_cpus}, "max_ongoing_requests": 256}
    return Ingress.options(**ingress).bind(generator, config, served)


def pin_model(config: ServeConfig) -> ModelRef:
    """``config.model`` pinned to a registry version (other URIs as given), logged once per deploy.

    An HTTP-only generator (``generator_url``) serves whatever its server loaded: nothing to pin."""
    if config.generator_url is not None or not config.model.startswith("models:/"):
        return ModelRef(config.model)
    import mlflow

    served = resolve_model(config.model, config.tracking_uri or mlflow.get_tracking_uri())
    logger.info(
        "serving %s = %s (run %s); every replica loads this version until the next deploy",
        config.model,
        served.uri,
        served.run_id,
    )
    return served


def _replica_options(config: ServeConfig) -> dict[str, Any]:
    """Serve options of the deployment that holds the model (the Generator; the Ingress when direct)."""
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": config.num_cpus, "num_gpus": config.num_gpus},
        "max_ongoing_requests": config.max_ongoing_requests,
        "max_queued_requests": config.max_queued_requests,
    }
    if config.autoscaling is not None:
        options["autoscaling_config"] = config.autoscaling
    else:
        options["num_replicas"] = config.replicas
    return options


def validate_args(args: dict[str, Any]) -> ServeConfig:
    """`ServeConfig` from ``args``; unknown or bad keys raise `ServeArgsError` naming them."""
    try:
        config = ServeConfig.model_validate(args or {})
    except ValidationError as exc:
        raise ServeArgsError(format_validation_error(exc, "build_app args", ServeConfig)) from None
    if config.model is None:
        raise ServeArgsError(
            "build_app args: 'model' is required (builtin:tiny, a folder, an HF id or models:/…)"
        )
    return config
