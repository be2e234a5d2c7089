"""Trace synthesis as a Ray job: ``python jobs/synth.py --config RECIPE``."""

import argparse

from _entry import recipe_from_args

from l2ray.synth.api import synthesize

recipe, _ = recipe_from_args(argparse.ArgumentParser(description=__doc__))
result = synthesize(recipe)
print(f"traces in {result.traces_dir}; summary {result.summary_path}")
