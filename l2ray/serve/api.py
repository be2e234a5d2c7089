"""Start the graph from Python: what `l2ray serve` and evaluation call."""

from __future__ import annotations

import socket
from typing import Any

from l2ray.errors import L2rayError
from l2ray.recipe import Recipe

APP_NAME = "l2ray"


class PortInUseError(L2rayError, OSError):
    """The HTTP port Serve was asked to listen on is taken by another process."""


class ServerNotReadyError(L2rayError, TimeoutError):
    """The graph started but no model replica became ready in time (see its replicas' logs)."""


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
    if not _serve_running():  # a running Serve already holds its own port
        check_port_free(settings["host"], settings["port"])
    serve.start(http_options={"host": settings["host"], "port": settings["port"]})
    serve.run(app, name=APP_NAME, route_prefix="/")
    return f"http://{settings['host']}:{settings['port']}/v1"


def wait_ready(url: str, timeout_s: float = 600.0, every_s: float = 1.0) -> dict[str, Any]:
    """Poll ``GET /readyz`` of a server at ``url`` (``…/v1``) until a model replica answers; its body.

    Raises `ServerNotReadyError` after ``timeout_s`` with the last answer.
    """
    import time

    import httpx

    ready_url = url.removesuffix("/v1") + "/readyz"
    deadline, last = time.monotonic() + timeout_s, "no answer"
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(ready_url, timeout=10.0)
            if answer.status_code == 200:
                return answer.json()
            last = f"{answer.status_code}: {answer.json().get('error', {}).get('message', answer.text)}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(every_s)
    raise ServerNotReadyError(f"{ready_url} did not answer 200 within {timeout_s:.0f} s (last: {last})")


def check_port_free(host: str, port: int) -> None:
    """Raise `PortInUseError` when nothing can listen on ``host:port`` because something already does."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is free
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PortInUseError(
                f"port {port} on {host} is in use ({exc.strerror}); stop what listens there "
                f"(`ss -ltnp 'sport = :{port}'` names it) or choose another: --port N, serve.port or "
                "http_options.port"
            ) from None


def _serve_running() -> bool:
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return False
    return True
