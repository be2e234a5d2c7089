"""Shared argument handling for the `ray job submit` entrypoints in this folder.

Each entrypoint is a thin call into the library: parse ``--config``/``--set``, attach to the cluster
the job runs on (``ray.init()`` with no arguments), run one stage, print where its outputs are.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# `ray job submit --working-dir .` puts the repo root in the working dir, not on sys.path for scripts
# started from jobs/; make the package importable either way.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from l2ray.recipe import Recipe, load_recipe


def recipe_from_args(parser: argparse.ArgumentParser) -> tuple[Recipe, argparse.Namespace]:
    """Add ``--config``/``--set`` to ``parser``, parse, connect to Ray; return the recipe and the args."""
    parser.add_argument("--config", required=True, help="recipe YAML, relative to the working dir")
    parser.add_argument("--set", action="append", default=[], help="override, e.g. train.lr=1e-5")
    args = parser.parse_args()
    recipe = load_recipe(args.config, args.set)

    import ray

    ray.init()  # the job's cluster
    return recipe, args
