"""What a training run produced, written to ``<run_dir>/train/result.json``: its own module, without
the training machinery, so that a run's report reads it back without importing torch or Ray."""

from __future__ import annotations

from pydantic import BaseModel


class TrainResult(BaseModel):
    """What a training run produced; also written to ``<run_dir>/train/result.json``."""

    model_uri: str
    version: str
    registered_model: str
    alias: str
    run_id: str
    experiment_id: str
    tracking_uri: str
    checkpoint_path: str
    ray_run_name: str
    steps: int
    final_loss: float
    rows: int
    data_fingerprint: str
    truncated_examples: int
    truncated_tokens: int
    tokens_per_s: float
    wall_s: float
    metrics: dict[str, float]


__all__ = ["TrainResult"]
