"""Seeds: JSONL/Parquet/HF loaders, the bundled seed and mini-eval sets.

Exports are imported on first use (`l2ray._lazy`).
"""

from __future__ import annotations

from l2ray._lazy import lazy_exports

_EXPORTS = {
    "SeedError": "seeds",
    "SeedLoadResult": "seeds",
    "SeedRow": "seeds",
    "bundled_file": "seeds",
    "load_seeds": "seeds",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
