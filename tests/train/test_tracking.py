"""Rank 0's step metrics reach the MLflow run in batches, and none is lost (real sqlite store)."""

from __future__ import annotations

from mlflow import MlflowClient

from l2ray.train.mlflow_run import StepMetricWriter, Tracker


def _history(tracker: Tracker, run_id: str, name: str) -> dict[int, float]:
    return {m.step: m.value for m in tracker.client.get_metric_history(run_id, name)}


def test_held_back_steps_are_written_together_on_flush(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = tracker.start_run("writer", {"train": {"lr": 0.1}}, tmp_path / "artifacts")
    writer = StepMetricWriter(tracker, run_id, flush_every_s=3600.0)

    for step in range(1, 4):
        writer.add({"loss": 1.0 / step, "tokens_per_s": 100.0 * step}, step)
    assert _history(tracker, run_id, "loss") == {}  # held back: the interval has not passed

    writer.flush()
    assert _history(tracker, run_id, "loss") == {1: 1.0, 2: 0.5, 3: 1.0 / 3}
    assert _history(tracker, run_id, "tokens_per_s") == {1: 100.0, 2: 200.0, 3: 300.0}
    writer.flush()  # nothing pending: no duplicate points
    assert len(MlflowClient(tracker.tracking_uri).get_metric_history(run_id, "loss")) == 3


def test_zero_interval_writes_every_step_and_large_histories_are_split(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = tracker.start_run("writer", {}, tmp_path / "artifacts")
    eager = StepMetricWriter(tracker, run_id, flush_every_s=0.0)
    eager.add({"loss": 2.0}, 1)
    assert _history(tracker, run_id, "loss") == {1: 2.0}

    # 600 steps × 2 metrics exceed MLflow's 1000 metrics per batch: still one flush, nothing dropped.
    held = StepMetricWriter(tracker, run_id, flush_every_s=3600.0)
    for step in range(2, 602):
        held.add({"loss": float(step), "lr": 0.1}, step)
    held.flush()
    loss = _history(tracker, run_id, "loss")
    assert sorted(loss) == list(range(1, 602)) and loss[601] == 601.0
    assert len(_history(tracker, run_id, "lr")) == 600
