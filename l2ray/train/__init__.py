"""Fine-tuning on Ray Train with MLflow tracking and the model registry.

Entry point (`l2ray.train.api`): `train` (``l2ray train``). Exports are imported on first use
(`l2ray._lazy`): ``import l2ray.train`` pulls in neither Ray nor torch.
"""

from __future__ import annotations

from l2ray._lazy import lazy_exports

_EXPORTS = {
    "TrainDataError": "mix",
    "TrainResult": "result",
    "train": "api",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
