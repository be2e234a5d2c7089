"""The student model: the offline builder, special reasoning tokens, and URI resolution.

Exports are imported on first use (`l2ray._lazy`).
"""

from __future__ import annotations

from l2ray._lazy import lazy_exports

_EXPORTS = {
    "ModelRef": "model_ref",
    "StudentNotFoundError": "resolve",
    "build_student": "build",
    "ensure_reasoning_tokens": "tokens",
    "load_student": "resolve",
    "resolve_model": "model_ref",
    "resolve_student": "resolve",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
