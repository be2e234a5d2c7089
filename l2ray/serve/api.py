"""Start the graph from Python: what `l2ray serve` and evaluation call."""

from __future__ import annotations

from typing import Any

from l2ray.config import Recipe

APP_NAME = "l2ray"


def run_server(
    recipe: Recipe, model_uri: str | None = None, port: int | None = None, **overrides: Any
) -> str:
    """Run the graph on the current Ray cluster (starting Serve) and return ``http://HOST:PORT/v1``.

    ``model_uri`` defaults to ``recipe.serve.model``, else ``models:/<registered model>@champion``;
    ``overrides`` replace `ServeConfig` fields for this run.
    """
    from ray import serve

    from l2ray.serve.app import build_app

    settings = recipe.serve.model_dump()
    settings["model"] = model_uri or recipe.serve.model or f"models:/{recipe.registered_model_name}@champion"
    settings["tracking_uri"] = settings.get("tracking_uri") or recipe.tracking_uri
    settings["port"] = port or recipe.serve.port
    settings.update(overrides)
    app = build_app(settings)
    serve.start(http_options={"host": settings["host"], "port": settings["port"]})
    serve.run(app, name=APP_NAME, route_prefix="/")
    return f"http://{settings['host']}:{settings['port']}/v1"
