"""Errors out of Ray Data: an `L2rayError` an actor raises reaches the driver as itself, with its message."""

from __future__ import annotations

import pytest

from l2ray.cluster import iter_rows
from l2ray.eval.engines import EngineFailedError


def _pool(ray, error: Exception):
    class Failing:  # defined here, so it travels to the actor by value (tests/ is not on its path)
        """An actor whose batch fails the way a dead engine fails it, or with a plain bug."""

        def __call__(self, batch: dict) -> dict:
            raise error

    return ray.data.from_items([{"x": 1}]).map_batches(
        Failing,
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=0.1,
    )


@pytest.mark.slow
def test_an_actors_l2ray_error_reaches_the_driver_as_itself(ray_cluster):
    with pytest.raises(EngineFailedError) as raised:
        list(iter_rows(_pool(ray_cluster, EngineFailedError("model m: the vLLM engine failed"))))
    assert str(raised.value).startswith("model m: the vLLM engine failed")
    assert type(raised.value) is EngineFailedError  # not Ray's wrapper with a remote traceback
    with pytest.raises(ray_cluster.exceptions.RayTaskError, match="a plain bug"):  # a bug keeps Ray's report
        list(iter_rows(_pool(ray_cluster, KeyError("a plain bug"))))
