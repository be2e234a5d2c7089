"""The Ray Serve graph: the OpenAI-compatible Ingress (with the reasoning controller) -> Generator.

Entry points: `run_server` (``l2ray serve``) and `build_app` (what ``serve_config.yaml`` imports).
Exports are imported on first use (`l2ray._lazy`): the deployments import Ray.
"""

from __future__ import annotations

from l2ray._lazy import lazy_exports

_EXPORTS = {
    "build_app": "app",
    "run_server": "api",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
