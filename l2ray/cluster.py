"""Joining a Ray cluster: one rule for every stage that distributes work.

A process that is already connected stays on its cluster; otherwise ``ray.init()`` joins the cluster
``RAY_ADDRESS`` names (a ``ray job``'s own cluster) or starts a local one.
"""

from __future__ import annotations


def ensure_ray() -> None:
    """Connect to Ray unless this process already is (``RAY_ADDRESS`` is honoured)."""
    import ray

    if not ray.is_initialized():
        ray.init()


__all__ = ["ensure_ray"]
