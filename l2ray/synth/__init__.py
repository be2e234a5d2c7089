"""Multilingual trace synthesis: whole-CoT annotation and step-wise code-switching on Ray Data.

Entry points (`l2ray.synth.api`): `synthesize` (``l2ray synth``), `translate_questions` and
`translator`. Exports are imported on first use (`l2ray._lazy`): ``import l2ray.synth`` stays light.
"""

from __future__ import annotations

from l2ray._lazy import lazy_exports

_EXPORTS = {
    "MissingResponsesError": "api",
    "SynthResult": "api",
    "synthesize": "api",
    "translate_questions": "api",
    "translator": "api",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
