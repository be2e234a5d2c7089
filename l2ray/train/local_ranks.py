"""Run a function on N local torch.distributed ranks (gloo, CPU processes) and collect the results.

The FSDP2 code path without a cluster, for tests and ``bench/train_throughput.py``: pass a
module-level function ``fn(rank, *args) -> picklable``; each rank runs in a spawned process with
one thread. No Ray import.

Example:
    >>> run_ranks(fn, Path("/tmp/ranks"), "arg", world=2)  # doctest: +SKIP
    [fn(0, "arg"), fn(1, "arg")]
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any


def run_ranks(fn: Callable[..., Any], folder: Path, *args: Any, world: int = 2) -> list[Any]:
    """``[fn(0, *args), …, fn(world - 1, *args)]``, each computed on its own rank."""
    import torch.multiprocessing as mp

    folder.mkdir(parents=True, exist_ok=True)
    mp.start_processes(_rank_entry, args=(fn, world, str(folder), args), nprocs=world, start_method="spawn")
    return [pickle.loads((folder / f"rank{r}.pkl").read_bytes()) for r in range(world)]


def _rank_entry(rank: int, fn: Callable[..., Any], world: int, folder: str, args: tuple[Any, ...]) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world)
    try:
        result = fn(rank, *args)
        Path(folder, f"rank{rank}.pkl").write_bytes(pickle.dumps(result))
    finally:
        dist.destroy_process_group()
