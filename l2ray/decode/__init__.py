"""Decoding intervention (pure Python + torch, no Ray): the per-request policy, its transformers
logits processors, the batched in-process engine and the HTTP segment loop.

Exports are imported on first use (`l2ray._lazy`): the engine and processors import torch.
"""

from __future__ import annotations

from l2ray._lazy import lazy_exports

_EXPORTS = {
    "Codec": "codec",
    "Completion": "types",
    "DecodeEngine": "engine",
    "DecodeRequest": "types",
    "PolicyCore": "core",
    "PolicyError": "spec",
    "PolicySpec": "spec",
    "ReasoningVocab": "spec",
    "RequestPolicy": "policy",
    "SegmentLoop": "segment",
    "TokenStep": "types",
    "default_processors": "processors",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
